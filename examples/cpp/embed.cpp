// embed: a musicembed track embedding in C++ with LibTorch, no Python.
//
//   embed MODEL.pt AUDIO.wav [--json] [--sample-rate HZ]
//
// MODEL.pt comes from `musicembed export-model ... -o MODEL.pt`: a TorchScript
// module mapping mono waves [B, T] (float32, at the encoder's sample rate) to
// L2-normalised vectors [B, dim]. It does the windowing, the encoder and the
// pooling itself, so this program only has to read the audio.
//
// AUDIO.wav: RIFF/WAVE, PCM 8/16/24/32-bit or IEEE float 32/64-bit, any number
// of channels (mixed to mono by averaging them, as musicembed does). It must
// already be at the model's sample rate: this program does not resample.
//
// Prints the vector, one number per line (or one JSON object with --json).
// Exit status: 0 on success, 2 on a user error (message on stderr).

#include <torch/cuda.h>
#include <torch/script.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Wav {
  int sample_rate = 0;
  int channels = 0;
  std::vector<float> mono;  // samples in [-1, 1], channels averaged
};

uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

uint32_t le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// One sample as float in [-1, 1], scaled like libsndfile (PCM: divide by 2^(bits-1)).
double sample_at(const unsigned char* p, int format, int bits) {
  if (format == 3) {  // IEEE float
    if (bits == 32) {
      float v;
      std::memcpy(&v, p, 4);  // WAV is little-endian, like every platform LibTorch runs on
      return v;
    }
    double v;
    std::memcpy(&v, p, 8);
    return v;
  }
  switch (bits) {
    case 8:
      return (static_cast<int>(p[0]) - 128) / 128.0;
    case 16:
      return static_cast<int16_t>(le16(p)) / 32768.0;
    case 24: {
      int32_t v = static_cast<int32_t>(static_cast<uint32_t>(p[0]) << 8 |
                                       static_cast<uint32_t>(p[1]) << 16 |
                                       static_cast<uint32_t>(p[2]) << 24) >> 8;
      return v / 8388608.0;
    }
    default:
      return static_cast<int32_t>(le32(p)) / 2147483648.0;
  }
}

Wav read_wav(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot open " + path);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const unsigned char* d = bytes.data();
  if (bytes.size() < 12 || std::memcmp(d, "RIFF", 4) != 0 || std::memcmp(d + 8, "WAVE", 4) != 0)
    throw UserError(path + " is not a RIFF/WAVE file (convert it first, e.g. ffmpeg -i IN OUT.wav)");

  int format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  size_t data_at = 0, data_size = 0;
  bool have_fmt = false, have_data = false;
  for (size_t pos = 12; pos + 8 <= bytes.size();) {
    size_t size = le32(d + pos + 4);
    const size_t body = pos + 8;
    if (size > bytes.size() - body) size = bytes.size() - body;  // truncated or streamed (size unknown)
    if (std::memcmp(d + pos, "fmt ", 4) == 0 && size >= 16) {
      format = le16(d + body);
      channels = le16(d + body + 2);
      rate = le32(d + body + 4);
      bits = le16(d + body + 14);
      if (format == 0xFFFE && size >= 26) format = le16(d + body + 24);  // WAVE_FORMAT_EXTENSIBLE
      have_fmt = true;
    } else if (std::memcmp(d + pos, "data", 4) == 0) {
      data_at = body;
      data_size = size;
      have_data = true;
    }
    pos = body + size + (size & 1);  // chunks are word-aligned
  }
  if (!have_fmt || !have_data) throw UserError(path + ": no fmt/data chunk: not a valid WAV file");
  const bool pcm = format == 1 && (bits == 8 || bits == 16 || bits == 24 || bits == 32);
  const bool flt = format == 3 && (bits == 32 || bits == 64);
  if (!(pcm || flt) || channels < 1)
    throw UserError(path + ": unsupported WAV encoding (format " + std::to_string(format) + ", " +
                    std::to_string(bits) + " bits); use PCM 8/16/24/32-bit or float 32/64-bit");

  Wav wav;
  wav.sample_rate = static_cast<int>(rate);
  wav.channels = channels;
  const size_t width = static_cast<size_t>(bits / 8);
  const size_t frames = data_size / (width * channels);
  wav.mono.resize(frames);
  const unsigned char* p = d + data_at;
  for (size_t i = 0; i < frames; ++i) {
    double sum = 0.0;
    for (int c = 0; c < channels; ++c, p += width) sum += sample_at(p, format, bits);
    wav.mono[i] = static_cast<float>(sum / channels);
  }
  return wav;
}

std::string json_string(const std::string& s) {
  std::ostringstream out;
  out << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out << '\\' << c;
    } else if (c < 0x20) {
      out << "\\u" << std::hex << std::setw(4) << std::setfill('0') << static_cast<int>(c) << std::dec;
    } else {
      out << c;
    }
  }
  out << '"';
  return out.str();
}

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0 << " MODEL.pt AUDIO.wav [--json] [--sample-rate HZ]\n"
            << "  --json            print {\"file\", \"sample_rate\", \"dim\", \"embedding\"}\n"
            << "  --sample-rate HZ  the rate the model expects, for models that do not record it\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  bool as_json = false;
  int cli_rate = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      as_json = true;
    } else if (arg == "--sample-rate" && i + 1 < argc) {
      cli_rate = std::atoi(argv[++i]);
    } else if (arg == "-h" || arg == "--help" || arg.rfind("--", 0) == 0) {
      return usage(argv[0]);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) return usage(argv[0]);
  const std::string model_path = positional[0], wav_path = positional[1];

  try {
    torch::jit::Module model;
    try {
      model = torch::jit::load(model_path);
    } catch (const c10::Error& e) {
      throw UserError("cannot load " + model_path + " as TorchScript: " + e.what_without_backtrace());
    }
    model.eval();

    int expected = cli_rate;
    if (model.hasattr("sample_rate")) {
      const int recorded = static_cast<int>(model.attr("sample_rate").toInt());
      if (cli_rate && cli_rate != recorded)
        throw UserError("--sample-rate " + std::to_string(cli_rate) + " but " + model_path +
                        " was exported for " + std::to_string(recorded) + " Hz");
      expected = recorded;
    }
    if (!expected)
      throw UserError(model_path + " does not record its sample rate: pass --sample-rate HZ");
    const std::string device_name =
        model.hasattr("device") ? model.attr("device").toStringRef() : std::string("cpu");
    const torch::Device device(device_name);
    if (device.is_cuda() && !torch::cuda::is_available())
      throw UserError(model_path + " was exported for " + device_name +
                      " but this LibTorch sees no CUDA GPU; export it with --device cpu");

    const Wav wav = read_wav(wav_path);
    if (wav.sample_rate != expected)
      throw UserError(wav_path + " is " + std::to_string(wav.sample_rate) + " Hz but the model expects " +
                      std::to_string(expected) + " Hz. Resample it first (this program does not), e.g.\n  ffmpeg -i " +
                      wav_path + " -ar " + std::to_string(expected) + " -ac 1 resampled.wav");
    if (wav.mono.empty()) throw UserError(wav_path + " contains no samples");

    torch::Tensor vector;
    {
      c10::InferenceMode guard;  // no autograd bookkeeping
      const auto n = static_cast<int64_t>(wav.mono.size());
      torch::Tensor wave = torch::from_blob(const_cast<float*>(wav.mono.data()), {1, n}, torch::kFloat32)
                               .to(device, /*non_blocking=*/false, /*copy=*/true);
      vector = model.forward({wave}).toTensor().to(torch::kCPU, torch::kFloat32).contiguous()[0];
    }

    const float* v = vector.data_ptr<float>();
    const int64_t dim = vector.numel();
    std::cout << std::setprecision(std::numeric_limits<float>::max_digits10);
    if (as_json) {
      std::cout << "{\"file\": " << json_string(wav_path) << ", \"sample_rate\": " << expected
                << ", \"dim\": " << dim << ", \"embedding\": [";
      for (int64_t i = 0; i < dim; ++i) std::cout << (i ? ", " : "") << v[i];
      std::cout << "]}\n";
    } else {
      for (int64_t i = 0; i < dim; ++i) std::cout << v[i] << '\n';
    }
    return 0;
  } catch (const UserError& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 2;
  }
}

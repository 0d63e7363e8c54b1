"""Model zoo: every SPEC form loads the same weights back, per-token shapes, safe loading."""

from __future__ import annotations

import gzip
import json
import pickle

import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from clipdistill.errors import UnsafeCheckpointError, UserError
from clipdistill.zoo import load_model, parse_spec, save_run_model

ARCH = "cd-student-xs-32"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(f"open_clip:{ARCH}")


@pytest.fixture(scope="module")
def batch(model):
    imgs = [Image.new("RGB", (48, 40), c) for c in [(250, 10, 10), (10, 200, 30), (20, 20, 220)]]
    images = torch.stack([model.eval_transform(im) for im in imgs])
    ids = model.tokenizer(["a red square", "a green circle on a grey background", "blue"])
    return images, ids


def embeddings(m, batch):
    with torch.no_grad():
        return m.encode_image(batch[0]), m.encode_text(batch[1])


def test_spec_grammar():
    assert parse_spec("open_clip:ViT-B-32@/x/y.pt").checkpoint == "/x/y.pt"
    assert parse_spec("hf:./dir").target == "./dir"
    assert parse_spec("open_clip:ViT-B-32@laion2b_s34b_b79k").checkpoint == "laion2b_s34b_b79k"
    assert parse_spec("open_clip:hf-hub:timm/ViT-B-16-SigLIP").target == "hf-hub:timm/ViT-B-16-SigLIP"
    assert parse_spec("hf:openai/clip-vit-base-patch32").target == "openai/clip-vit-base-patch32"
    for bad in ["ViT-B-32", "hf:", "run:a@b", "torch:foo", "open_clip:hf-hub:a/b@c", "hf:org/name@main"]:
        with pytest.raises(UserError):
            parse_spec(bad)


@pytest.mark.parametrize("fmt", ["open_clip_ckpt", "bare", "safetensors"])
def test_checkpoint_formats_roundtrip(model, batch, tmp_path, fmt):
    state = model.inner.state_dict()
    if fmt == "open_clip_ckpt":  # what open_clip's trainer writes under DDP
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "name": "x", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif fmt == "bare":
        path = tmp_path / "sd.pt"
        torch.save(state, path)
    else:
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_model(f"open_clip:{ARCH}@{path}")
    a, b = embeddings(model, batch), embeddings(loaded, batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert loaded.weights_hash() == model.weights_hash()


def test_json_config_path_and_run_folder(model, batch, tmp_path):
    cfg_path = tmp_path / "my-arch.json"
    cfg_path.write_text(json.dumps(model.arch_config))
    fresh = load_model(f"open_clip:{cfg_path}")
    assert fresh.embed_dim == model.embed_dim and fresh.num_params() == model.num_params()
    save_run_model(model, tmp_path / "run")
    from_run = load_model(f"run:{tmp_path / 'run'}")
    a, b = embeddings(model, batch), embeddings(from_run, batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_training_checkpoint_loads_as_open_clip_weights(model, batch, tmp_path):
    """A mid-run `distill` checkpoint (student beside loss modules) evaluates via open_clip:ARCH@FILE."""
    from clipdistill.train.checkpoint import module_state

    extra = torch.nn.Linear(3, 2)  # a learnable loss part, saved in the same file under "loss."
    path = tmp_path / "model.safetensors"
    save_file(module_state({"student": model, "loss": extra}), str(path))
    loaded = load_model(f"open_clip:{ARCH}@{path}")
    a, b = embeddings(model, batch), embeddings(loaded, batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(UserError, match="checkpoints/step_N"):
        load_model(f"run:{tmp_path}")  # no model.json: the message says how to load a checkpoint


def test_token_features_shapes_and_pooling(model, batch):
    images, ids = batch
    with torch.no_grad():
        pooled, patches = model.encode_image_tokens(images)
        tpooled, tokens, mask = model.encode_text_tokens(ids)
    grid = model.image_size // model.arch_config["vision_cfg"]["patch_size"]
    assert patches.shape == (3, grid * grid, model.embed_dim)
    assert tokens.shape == (3, model.context_length, model.embed_dim)
    assert torch.allclose(pooled, model.encode_image(images), atol=1e-6)
    assert torch.allclose(tpooled, model.encode_text(ids), atol=1e-6)
    # mask covers start token + words + EOS: "blue" -> 3 tokens
    assert mask[2].sum().item() == 3 and mask[2, :3].all()
    # the pooled text feature is the EOS token's feature
    eos_pos = mask.sum(1) - 1
    assert torch.allclose(tokens[torch.arange(3), eos_pos], tpooled, atol=1e-6)


def test_resnet_token_features_come_from_the_attention_pool():
    """A CLIP ResNet's grid tokens are the attention pool's other outputs: its first one is encode_image."""
    torch.manual_seed(0)
    rn = load_model("open_clip:cd-teacher-rn-64").eval()
    images = torch.randn(2, 3, rn.image_size, rn.image_size)
    with torch.no_grad():
        pooled, patches = rn.encode_image_tokens(images)
        reference = rn.encode_image(images)
    assert patches.shape == (2, (rn.image_size // 32) ** 2, rn.embed_dim)  # stride-32 feature map: 2x2 at 64 px
    assert torch.allclose(pooled, reference, atol=1e-5)
    assert not torch.allclose(patches[:, 0], patches[:, 1])  # each cell its own query, not copies of the pool


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, f)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_model(f"open_clip:{ARCH}@{path}")
    assert not marker.exists()


def test_wrong_architecture_checkpoint_is_a_clear_error(model, tmp_path):
    path = tmp_path / "other.safetensors"
    other = load_model("open_clip:cd-student-s-32")
    save_file({k: v.contiguous() for k, v in other.inner.state_dict().items()}, str(path))
    with pytest.raises(UserError, match="another architecture"):
        load_model(f"open_clip:{ARCH}@{path}")


def write_hf_clip_folder(folder, seed=0):
    """A random Hugging Face CLIPModel + a real CLIP BPE tokenizer (open_clip's vocab) + image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    bpe = open_clip.tokenizer.default_bpe()
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    folder.mkdir(parents=True, exist_ok=True)
    enc = dict(open_clip.tokenizer.SimpleTokenizer().encoder)
    # same vocabulary, HF's names for the two special tokens
    enc["<|startoftext|>"] = enc.pop("<start_of_text>")
    enc["<|endoftext|>"] = enc.pop("<end_of_text>")
    (folder / "vocab.json").write_text(json.dumps(enc))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=32, vocab_size=len(enc), eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=48,
    )
    CLIPModel(cfg).save_pretrained(str(folder))
    return folder


def test_hf_folder_matches_transformers(tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    folder = write_hf_clip_folder(tmp_path / "hf")
    ours = load_model(f"hf:{folder}")
    ref = CLIPModel.from_pretrained(str(folder)).eval()
    tok = CLIPTokenizer.from_pretrained(str(folder))
    texts = ["a photo of a cat", "two red circles"]
    enc = tok(texts, padding="max_length", max_length=32, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref_img = ref.visual_projection(ref.vision_model(pixel_values=pixels).pooler_output)
        ref_txt = ref.text_projection(ref.text_model(**enc).pooler_output)
        ids = ours.tokenizer(texts)
        assert torch.equal(ids, enc["input_ids"])
        assert torch.allclose(ours.encode_image(pixels), ref_img, atol=1e-6)
        assert torch.allclose(ours.encode_text(ids), ref_txt, atol=1e-6)
        _, patches = ours.encode_image_tokens(pixels)
        _, tokens, mask = ours.encode_text_tokens(ids)
    assert patches.shape == (2, 16, 48) and tokens.shape == (2, 32, 48)
    assert mask.sum(1).tolist() == enc["attention_mask"].sum(1).tolist()
    assert ours.embed_dim == 48 and ours.image_size == 32
    assert ours.eval_transform(Image.new("RGB", (50, 40))).shape == (3, 32, 32)


def test_teacher_and_student_differ_in_resolution_and_dim():
    t, s = load_model("open_clip:cd-teacher-64"), load_model("open_clip:cd-student-xs-32")
    im = Image.new("RGB", (80, 80), (1, 2, 3))
    assert t.eval_transform(im).shape[-1] == 64 and s.eval_transform(im).shape[-1] == 32
    assert (t.embed_dim, s.embed_dim) == (256, 64)
    assert s.num_params()["total"] < t.num_params()["total"]


def test_every_shipped_arch_builds_and_is_listed():
    """`models list` shows each shipped config (the ResNet teacher too) and each one encodes an image."""
    from typer.testing import CliRunner

    from clipdistill.cli import app
    from clipdistill.zoo import shipped_archs

    res = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})  # rich reads COLUMNS
    assert res.exit_code == 0, res.output
    assert "ResNet 32 x 1-1-1-1" in res.output
    for name in shipped_archs():
        assert name in res.output
        m = load_model(f"open_clip:{name}")
        with torch.no_grad():
            emb = m.encode_image(m.eval_transform(Image.new("RGB", (64, 64), (9, 9, 9))).unsqueeze(0))
        assert emb.shape == (1, m.embed_dim), name


# real captions: short, long past the context, punctuation and digits, non-Latin scripts, a very long sentence
REAL_CAPTIONS = [
    "a photo of a cat",
    "Two dogs playing in the snow, one brown and one white, next to a red fence in the late afternoon.",
    "https://example.com/img_0042.jpg — 3 x 4.5 cm, 1998; \"quoted\" words & symbols!",
    "東京の夜景 und eine Straße in München, ça va très bien",
    " ".join(["a wide sunny beach with people, umbrellas and boats on the calm blue sea"] * 60),  # ~4400 characters
]


def test_tokenizer_character_cap_keeps_the_tokens_of_real_text(tmp_path):
    """Every ClipModel tokenizer cuts texts to 20 x context_length characters (a million-letter word would hang
    open_clip's BPE); the tokens of real captions, also those far past the context, are the uncapped ones."""
    from transformers import CLIPTokenizer

    from clipdistill.zoo.base import text_char_budget

    m = load_model(f"open_clip:{ARCH}")
    assert len(REAL_CAPTIONS[-1]) > text_char_budget(m.context_length)
    assert torch.equal(m.tokenizer(REAL_CAPTIONS), open_clip.get_tokenizer(ARCH)(REAL_CAPTIONS))
    assert type(m.tokenizer.wrapped).__name__ == "SimpleTokenizer" and m.tokenizer.context_length == m.context_length
    assert torch.equal(m.tokenizer(REAL_CAPTIONS[0]), m.tokenizer([REAL_CAPTIONS[0]]))  # a str, as open_clip takes
    # loader workers may pickle it
    assert pickle.loads(pickle.dumps(m.tokenizer))(REAL_CAPTIONS[:1]).shape == (1, m.context_length)

    folder = write_hf_clip_folder(tmp_path / "hf")
    hf = load_model(f"hf:{folder}")
    ref = CLIPTokenizer.from_pretrained(str(folder))(REAL_CAPTIONS, padding="max_length", truncation=True,
                                                     max_length=32, return_tensors="pt")["input_ids"]
    assert len(REAL_CAPTIONS[-1]) > text_char_budget(hf.context_length)
    assert torch.equal(hf.tokenizer(REAL_CAPTIONS), ref)


def test_hf_folder_skips_the_random_init_it_would_overwrite(tmp_path, monkeypatch):
    """`hf:` builds the transformers model without its weight init (seconds for a ViT-B) and still equals
    `from_pretrained` (test_hf_folder_matches_transformers); here: no init ran, and no tensor is left unloaded."""
    from safetensors.torch import load_file
    from transformers import CLIPPreTrainedModel

    folder = write_hf_clip_folder(tmp_path / "hf", seed=3)
    calls = []
    monkeypatch.setattr(CLIPPreTrainedModel, "_init_weights", lambda self, module: calls.append(module))
    ours = load_model(f"hf:{folder}")
    assert calls == []
    saved = load_file(str(folder / "model.safetensors"))
    own = ours.inner.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items() if k in own)
    assert set(own) - set(saved) <= {k for k in own if k.endswith("position_ids")}
    for name, buf in ours.inner.named_buffers():  # non-persistent buffers made in __init__, not by the skipped init
        assert torch.equal(buf, torch.arange(buf.shape[-1]).expand(1, -1)), name


@pytest.mark.parametrize("arch", [ARCH, "cd-teacher-rn-64"])
def test_open_clip_checkpoint_skips_the_random_init_it_would_overwrite(arch, tmp_path, monkeypatch):
    """`open_clip:ARCH@FILE` and run folders build without torch.nn.init's initialisers (~1 s of a ViT-B/32's
    load on CPU, discarded); the model still equals the saved one, every tensor loaded, and the initialisers are
    back afterwards."""
    torch.manual_seed(1)
    saved = load_model(f"open_clip:{arch}")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in saved.inner.state_dict().items()}, str(path))
    original = torch.nn.init.normal_
    calls = []
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *a, **k: calls.append(t) or original(t, *a, **k))
    loaded = load_model(f"open_clip:{arch}@{path}")
    assert calls == []
    imgs = torch.randn(2, 3, loaded.image_size, loaded.image_size)
    with torch.no_grad():
        assert torch.equal(saved.encode_image(imgs), loaded.encode_image(imgs))
    own, ref = loaded.inner.state_dict(), saved.inner.state_dict()
    assert own.keys() == ref.keys() and all(torch.equal(own[k], ref[k]) for k in ref)
    load_model(f"open_clip:{arch}")  # random init (no checkpoint) still runs the initialisers
    assert calls
    # a checkpoint short of one tensor is still refused, not left holding uninitialised memory
    del own[next(k for k in own if k.endswith("weight"))]
    save_file({k: v.contiguous() for k, v in own.items()}, str(path))
    with pytest.raises(UserError, match="missing"):
        load_model(f"open_clip:{arch}@{path}")

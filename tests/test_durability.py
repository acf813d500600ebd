"""Durable switches: every data file of a knowledge-base generation or a checkpoint is fsynced
before the pointer to it (the base's manifest.json, the checkpoints' latest.json) is replaced, so a
power cut never leaves a pointer to files still empty on disk. Checked by recording the real
os.fsync and os.replace calls in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def recorded(monkeypatch):
    """[("fsync", path) | ("replace", src, dst)] of every call, in order (the calls still happen)."""
    events: list[tuple] = []
    fsync, replace = os.fsync, os.replace

    def rec_fsync(fd):
        events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
        return fsync(fd)

    def rec_replace(src, dst, **kw):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        return replace(src, dst, **kw)
    monkeypatch.setattr(os, "fsync", rec_fsync)
    monkeypatch.setattr(os, "replace", rec_replace)
    return events


def _switch(events: list[tuple], pointer: Path) -> int:
    (i,) = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == os.path.realpath(pointer)]
    return i


def _synced_before(events: list[tuple], end: int, root: Path, folder: Path) -> set[str]:
    """The files (relative to `folder`) fsynced before event `end`, whether they were then under
    `folder` or the temporary folder it was renamed from (a name beside it)."""
    out = set()
    for e in events[:end]:
        if e[0] == "fsync":
            rel = Path(e[1]).relative_to(os.path.realpath(root)) if e[1].startswith(os.path.realpath(root)) else None
            if rel is not None and len(rel.parts) > 1 and folder.name in rel.parts[0]:
                out.add(Path(*rel.parts[1:]).as_posix())
    return out


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an fd's file through /proc")
def test_a_knowledge_base_generation_is_on_disk_before_its_manifest_points_at_it(tmp_path, recorded):
    from tailor.models import load_tokenizer
    from tailor.retrieval import Chunker, Document, KnowledgeBase, build
    chunker = Chunker(load_tokenizer("tiny-test"))
    docs = [Document("a", "A", "Refunds take 14 days."), Document("b", "B", "We ship to France.")]
    out = tmp_path / "kb"
    kb, _ = build(docs, out, chunker, progress=False)
    gen = out / kb.manifest["generation"]
    end = _switch(recorded, out / "manifest.json")
    assert _files(gen) and _files(gen) <= _synced_before(recorded, end, out, gen), "a data file was not fsynced"
    # the generation folder got its name, and the base's folder (the name in it) was fsynced, before the switch
    renamed = [i for i, e in enumerate(recorded) if e[0] == "replace" and e[2] == os.path.realpath(gen)]
    assert renamed and renamed[0] < end
    assert any(e == ("fsync", os.path.realpath(out)) for e in recorded[renamed[0]:end])

    # a rebuild removes only the base's own generations (and one a killed build left), never a
    # user's folder that merely starts like one
    (out / "g-notes").mkdir()
    (out / "g-notes" / "mine.txt").write_text("keep")
    (out / ".g-0123456789ab.tmp").mkdir()
    kb2, _ = build([*docs, Document("c", "C", "Our office is in Lyon.")], out, chunker, progress=False)
    assert (out / "g-notes" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in out.iterdir()) == sorted(["g-notes", kb2.manifest["generation"], "manifest.json"])
    assert len(KnowledgeBase.open(out).chunks) == 3


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an fd's file through /proc")
def test_a_checkpoint_is_on_disk_before_latest_json_points_at_it(tmp_path, recorded):
    import torch

    from tailor.train.checkpoint import save_checkpoint
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    root = tmp_path / "checkpoints"
    final = save_checkpoint(root, model, opt, {"step": 3})
    end = _switch(recorded, root / "latest.json")
    assert {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"} <= _files(final)
    assert _files(final) <= _synced_before(recorded, end, root, final), "a checkpoint file was not fsynced"

"""SIGTERM (a preempted or cancelled job) stops a run at a boundary it can resume from, with a non-zero exit; HF
exports leave no staging dirs behind and get the umask's permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from transformers import AutoModelForCausalLM

from cft.cli import STOPPED_EXIT_CODE, main
from tests.helpers import fast_fit_args


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_sigterm_during_fit_checkpoints_at_the_stop_point(tiny_model_dir, tmp_path, capsys):
    main(fast_fit_args(tiny_model_dir, tmp_path / "a", name="r", steps=6))
    args = fast_fit_args(tiny_model_dir, tmp_path / "b", name="r", steps=6)
    with pytest.raises(SystemExit) as e:
        main([*args, "--trainer.callbacks+=tests.helpers.SigtermAtStep", "--trainer.callbacks.step", "2"])
    assert e.value.code == STOPPED_EXIT_CODE
    run = tmp_path / "b/exp/r"
    err = capsys.readouterr().err
    assert f"[cft] SIGTERM: wrote {run / 'checkpoints/last.ckpt'} at step 2" in err
    assert err.strip().splitlines()[-1] == "[cft] stopped by SIGTERM; run the same command again to resume"
    # Validation (and so the periodic checkpoint) comes at step 6: this one is the stop point's own.
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    assert not (run / "hf/last").exists(), "a stopped run must not export as if it had finished"
    main(args)
    a, b = _weights(tmp_path / "a/exp/r/hf/last"), _weights(run / "hf/last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{k} differs after SIGTERM and resume")


def test_hf_exports_clean_staging_and_follow_umask(tiny_model_dir, tmp_path):
    args = fast_fit_args(tiny_model_dir, tmp_path, name="r", steps=1)
    hf = tmp_path / "exp/r/hf"
    # What exports killed between mkdir and rename leave (old mkdtemp names, the current staging name, a best.old).
    for stale in (".best.k2j3l9", ".last.tmp-99999", "best.old"):
        (hf / stale).mkdir(parents=True)
        (hf / stale / "model.safetensors").write_text("partial")
    old = os.umask(0o027)
    try:
        main(args)
    finally:
        os.umask(old)
    assert sorted(p.name for p in hf.iterdir()) == ["best", "last"]
    for sub in ("best", "last"):
        assert stat.S_IMODE((hf / sub).stat().st_mode) == 0o750, f"hf/{sub} must follow the umask"
        assert stat.S_IMODE((hf / sub / "config.json").stat().st_mode) == 0o640


def test_failed_export_leaves_no_staging_dir(tiny_model_dir, tmp_path, monkeypatch):
    from cft.lm.loading import ModelConfig
    from cft.modules import TokenWeightedLearner

    module = TokenWeightedLearner(ModelConfig(name_or_path=str(tiny_model_dir)))
    module.configure_model()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.tokenizer, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        module.save_hf(tmp_path / "hf" / "best")
    assert list((tmp_path / "hf").iterdir()) == []

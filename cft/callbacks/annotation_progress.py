"""Annotation progress on Lightning's predict progress bar: kept questions and rollouts/s (rich or tqdm)."""

from __future__ import annotations

import lightning as L

from cft.modules.scorer import AnnotationProgress, PerturbationScorer


class AnnotationProgressBar(L.Callback):
    """Writes the scorer's progress (`kept k/n · r rollouts/s`) into the predict progress bar after every chunk of
    rollouts; does nothing without a progress bar."""

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, PerturbationScorer):
            self._trainer = trainer
            pl_module.progress_listeners.append(self.show)

    def show(self, p: AnnotationProgress) -> None:
        bar = self._trainer.progress_bar_callback
        text = f"kept {p.kept}/{p.asked} · {p.rollouts_per_s:,.0f} rollouts/s"
        # Lightning's bars keep their predict bar in private fields; this is the one place that knows them.
        if getattr(bar, "progress", None) is not None and getattr(bar, "predict_progress_bar_id", None) is not None:
            bar.progress.update(bar.predict_progress_bar_id, description=f"Annotating · {text}")
            bar.refresh()
        elif getattr(bar, "_predict_progress_bar", None) is not None:
            bar._predict_progress_bar.set_postfix_str(text)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, PerturbationScorer) and self.show in pl_module.progress_listeners:
            pl_module.progress_listeners.remove(self.show)

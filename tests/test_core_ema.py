"""The EMA callback with warm-up: closed-form averages, integer buffers, pickling, and a Lightning run."""

import math
import pickle

import lightning.pytorch as pl
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from polydiff.core.ema import EMA, WarmupEMAUpdate
from polydiff.core.utils import PolydiffError


def test_decay_schedule_is_the_tensorflow_warmup_capped_at_decay():
    fn = WarmupEMAUpdate(0.999)
    assert fn.decay_at(0) == pytest.approx(0.1)
    assert fn.decay_at(90) == pytest.approx(0.91)
    assert fn.decay_at(10**6) == pytest.approx(0.999)
    assert WarmupEMAUpdate(0.999, warmup=False).decay_at(0) == 0.999


def test_average_towards_a_constant_matches_the_product_of_decays():
    """First update copies w0; then n updates towards a constant c leave (w0 - c) * prod(decay_k) of the start."""
    net = torch.nn.Linear(3, 2)
    w0 = net.weight.detach().clone()
    fn = WarmupEMAUpdate(0.95)
    avg = AveragedModel(net, multi_avg_fn=fn, use_buffers=True)
    avg.update_parameters(net)  # the copy
    with torch.no_grad():
        net.weight.fill_(2.0)
    n = 40
    for _ in range(n):
        avg.update_parameters(net)
    keep = math.prod(fn.decay_at(k) for k in range(1, n + 1))
    expected = 2.0 + (w0 - 2.0) * keep
    assert torch.allclose(avg.module.weight, expected, atol=1e-6)
    # without the warm-up the start would weigh 0.95^40 = 0.13; with it far less
    assert keep < 0.3 * 0.95**n


def test_integer_buffers_are_copied_not_averaged():
    net = torch.nn.BatchNorm1d(2)
    avg = AveragedModel(net, multi_avg_fn=WarmupEMAUpdate(0.9), use_buffers=True)
    avg.update_parameters(net)
    net.num_batches_tracked.fill_(7)
    avg.update_parameters(net)
    assert avg.module.num_batches_tracked.item() == 7
    assert avg.module.num_batches_tracked.dtype == torch.long


def test_callback_survives_pickling():
    """ddp_spawn pickles the trainer's callbacks: ours must survive it with its decay schedule intact."""
    ema = pickle.loads(pickle.dumps(EMA(decay=0.99)))
    fn = ema._kwargs["multi_avg_fn"]
    assert ema.decay == 0.99 and fn.decay_at(10**6) == pytest.approx(0.99)
    assert fn.decay_at(0) == pytest.approx(min(0.99, 1 / 10))  # the warm-up: (1 + n) / (10 + n)


def test_bad_decay_is_a_clear_error():
    with pytest.raises(PolydiffError, match="decay"):
        EMA(decay=1.5)


class _Scalar(pl.LightningModule):
    """One parameter moved by plain SGD on the loss w (gradient 1): w_k = w_0 - k * lr, known in closed form."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(5.0))

    def training_step(self, batch, batch_idx):
        return self.w * 1.0 + 0.0 * batch.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(12, 1), batch_size=1)


def test_lightning_run_ends_with_the_warmed_up_average(tmp_path):
    model = _Scalar()
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=12, callbacks=[EMA(decay=0.9)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(model)
    fn = WarmupEMAUpdate(0.9)
    weights = [5.0 - 0.1 * k for k in range(1, 13)]  # after each optimiser step
    ema = weights[0]  # the first update copies
    for n, w in enumerate(weights[1:], start=1):
        ema = fn.decay_at(n) * ema + (1 - fn.decay_at(n)) * w
    # at the end of fit the callback copies the average into the model
    assert model.w.item() == pytest.approx(ema, abs=1e-5)
    assert abs(model.w.item() - weights[-1]) > 1e-3


def test_test_after_fit_uses_the_average_without_warning(tmp_path):
    import warnings

    model = _Scalar()
    model.test_step = lambda batch, batch_idx: None
    model.test_dataloader = model.train_dataloader
    kw = dict(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
              accelerator="cpu")
    trainer = pl.Trainer(max_steps=12, callbacks=[EMA(decay=0.9)], **kw)
    trainer.fit(model)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    averaged = model.w.item()
    fresh = _Scalar()
    fresh.test_step = lambda batch, batch_idx: None
    fresh.test_dataloader = fresh.train_dataloader
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(callbacks=[EMA(decay=0.9)], **kw).test(fresh, ckpt_path=str(ckpt), verbose=False)
    assert not [w for w in caught if "WeightAveraging" in str(w.message)]
    assert fresh.w.item() == pytest.approx(averaged, abs=1e-6)  # the checkpoint's weights are the average


def test_buffers_filled_from_data_are_copied_into_the_average(tmp_path):
    """A buffer set after the averaged copy exists (as connect_data does for marginals) is the model's exactly in the
    average and in the checkpoint's EMA state_dict, not a blend with its placeholder."""

    class WithStats(_Scalar):
        def __init__(self):
            super().__init__()
            self.register_buffer("stats", torch.zeros(3))

        def on_train_batch_start(self, batch, batch_idx):
            if self.global_step == 2:  # filled from "the data" after the average has started (two updates in)
                self.stats.fill_(7.0)

    model = WithStats()
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=5, callbacks=[EMA(decay=0.9)], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model)
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert torch.equal(ckpt["state_dict"]["stats"], torch.full((3,), 7.0))
    assert torch.equal(model.stats, torch.full((3,), 7.0))

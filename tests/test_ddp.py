"""Per-sample state under DDP on CPU (two ``ddp_spawn`` processes, gloo): one teacher cache and one CRD bank,
gathered from every rank; the SyncBatchNorm option.

One spawned fit carries every DDP check (starting the two processes costs far more than the few steps)."""

import functools

import lightning.pytorch as L
import torch
from conftest import compose_config
from hydra.utils import instantiate
from lightning.pytorch.plugins import TorchSyncBatchNorm

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import CRD, CachedTeacher, CrossEntropy, Outputs
from kd_lightning.distill.cache import TeacherCache, finish_writes
from kd_lightning.distill.distributed import first_occurrences
from kd_lightning.fast import FastPath
from kd_lightning.models import DeepNN, LightNN
from kd_lightning.models.registry import build
from kd_lightning.modules import DistillationModule

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
BATCH = 16


def data():
    # 153 - 64 = 89 training samples: shards of 45 (one sample on both ranks: the padding), batches of 16, 16, 13
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=153, num_test=16), 10, [0.5] * 3,
                                    [0.25] * 3, val_size=64, batch_size=BATCH, resident=True)


class Record(L.Callback):
    """What each rank ends with, saved to ``rank<r>.pt``: the weights, the teacher's forwards per epoch, the indices
    it trained on per epoch, its cache, and its CRD banks at the start and after each epoch."""

    def __init__(self, directory):
        self.directory = directory

    def setup(self, trainer, module, stage):
        # every rank another random state (as without a common seed): the banks still start identical (broadcast)
        torch.manual_seed(100 + trainer.global_rank)

    def on_train_start(self, trainer, module):
        self.calls, self.seen, self.banks = {}, {}, []
        crd = module.terms["crd"]
        self.banks.append((crd.memory_s.clone(), crd.memory_t.clone()))
        self.start = [p.detach().clone() for p in module.net.parameters()]
        for net in module.teacher.networks():
            net.register_forward_hook(lambda *_: self.calls.update({
                trainer.current_epoch: self.calls.get(trainer.current_epoch, 0) + 1}))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).append(batch[2].clone())

    def on_train_epoch_end(self, trainer, module):
        crd = module.terms["crd"]
        self.banks.append((crd.memory_s.clone(), crd.memory_t.clone()))

    def on_train_end(self, trainer, module):
        teacher, crd = module.teacher, module.terms["crd"]
        torch.save({
            "start": self.start, "weights": [p.detach().clone() for p in module.net.parameters()],
            "calls": self.calls, "seen": {e: torch.cat(i) for e, i in self.seen.items()}, "banks": self.banks,
            "normalizer": crd.normalizer.clone(), "cached": isinstance(teacher, CachedTeacher),
            "cache": (teacher.cache.filled, teacher.cache.logits, teacher.cache.features),
        }, self.directory / f"rank{trainer.global_rank}.pt")


def test_under_ddp_the_ranks_share_one_teacher_cache_and_one_crd_bank_and_stay_in_sync(tmp_path):
    torch.manual_seed(0)
    crd = CRD("features", "features", 16 * 8 * 8, 32 * 8 * 8, weight=0.5, feat_dim=16, nce_k=32)
    module = DistillationModule(LightNN(), DeepNN(), {"ce": CrossEntropy(0.5), "crd": crd}, ADAM)
    teacher = DeepNN()
    teacher.load_state_dict(module.teacher.net.state_dict())  # the teacher as it was, for live outputs here
    speed = FastPath(capture_step=True, teacher_cache=True)  # DDP: the scheme's own step, the cache gathered
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, limit_val_batches=0,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[Record(tmp_path), speed])
    trainer.fit(module, datamodule=data())
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    n, batches = 89, 3

    # the student: trained, the same on both ranks
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["weights"], ranks[1]["weights"]))
    assert not all(torch.equal(a, b) for a, b in zip(ranks[0]["weights"], ranks[0]["start"]))

    # each rank trained on its own half in epoch 0 (the shards cover the split; one sample padded onto rank 1)
    seen0 = [set(r["seen"][0].tolist()) for r in ranks]
    assert len(seen0[0]) == len(seen0[1]) == 45 and seen0[0] | seen0[1] == set(range(n))
    assert len(seen0[0] & seen0[1]) == 1

    # teacher cache: the teacher ran once per batch in epoch 0 and never in epoch 1, on both ranks; both caches
    # hold every sample, the same bits, and those are the live teacher's outputs rounded to bf16 (relative error
    # <= 2^-9, plus fp32 differences between batchings, far below 1e-5)
    for r in ranks:
        assert r["cached"] and r["calls"] == {0: batches} and bool(r["cache"][0].all())
    (_, logits0, features0), (_, logits1, features1) = ranks[0]["cache"], ranks[1]["cache"]
    assert torch.equal(logits0, logits1) and torch.equal(features0["features"], features1["features"])
    datamodule = data()
    datamodule.setup("fit")
    x = datamodule.transform(datamodule.splits["train"][0], train=False)
    with torch.no_grad():
        teacher.eval()
        live_features = teacher.features(x)
        live_logits = teacher.classifier(live_features.flatten(1))
    assert logits0.dtype == torch.bfloat16
    torch.testing.assert_close(logits0.float(), live_logits, rtol=2**-8, atol=1e-5)
    torch.testing.assert_close(features0["features"].float(), live_features, rtol=2**-8, atol=1e-5)

    # CRD: one bank. It starts as rank 0's rows on both ranks, after epoch 0 every row has moved on both ranks
    # (each rank trained on half of them: the other half came from the other rank), and it ends identical
    (start0, _), (start1, _) = ranks[0]["banks"][0], ranks[1]["banks"][0]
    assert torch.equal(start0, start1)
    for r in ranks:
        for before, after in zip(r["banks"][0], r["banks"][1]):
            assert (before != after).any(dim=1).all()
    for bank0, bank1 in zip(ranks[0]["banks"][-1], ranks[1]["banks"][-1]):
        assert torch.equal(bank0, bank1)
    assert torch.equal(ranks[0]["normalizer"], ranks[1]["normalizer"])  # Z from the whole first global batch


def test_the_sync_batchnorm_option_converts_a_zoo_networks_batchnorm_layers(tmp_path):
    cfg = compose_config(tmp_path, "trainer=ddp", "trainer.sync_batchnorm=true", "trainer.devices=2",
                         "trainer.strategy=ddp_spawn")
    trainer = instantiate(cfg.trainer, logger=False)  # CPU; nothing runs before fit
    # Lightning converts the model in DDPStrategy.setup with the strategy's (private) layer-sync plugin
    assert isinstance(trainer.strategy._layer_sync, TorchSyncBatchNorm)
    net = build("resnet20", num_classes=10)
    before = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    net = trainer.strategy._layer_sync.apply(net)
    assert before > 0 and sum(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules()) == before
    assert not any(type(m) is torch.nn.BatchNorm2d for m in net.modules())

    cfg = compose_config(tmp_path, "trainer=ddp", "trainer.devices=2", "trainer.strategy=ddp_spawn")
    assert cfg.trainer.sync_batchnorm is False and instantiate(cfg.trainer, logger=False).strategy._layer_sync is None


def test_only_the_rank_that_saves_checkpoints_writes_the_complete_teacher_cache_file(tmp_path):
    cache = TeacherCache(4, torch.device("cpu"))
    cache.store(torch.arange(4), Outputs(torch.randn(4, 10), {"features": torch.randn(4, 2, 2)}))
    entry = cache.checkpoint_entry(tmp_path, write=False)  # another rank: names the file, writes nothing
    assert entry == {"file": TeacherCache.FILE, "num_samples": 4} and not (tmp_path / TeacherCache.FILE).exists()
    assert cache.checkpoint_entry(tmp_path) == entry
    finish_writes()  # the file is written by a thread beside training
    assert (tmp_path / TeacherCache.FILE).is_file()


def test_first_occurrences_gives_repeated_indices_the_first_position():
    index = torch.tensor([3, 1, 3, 0, 1, 3])
    assert first_occurrences(index, 5).tolist() == [0, 1, 0, 3, 1, 0]

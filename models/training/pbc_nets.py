"""PBC sequence models' networks (GRU and transformer encoder over binned visits, the same
in-graph preprocessing), their training loop, grids, and ONNX export. See pbc_sequences.py."""

from __future__ import annotations

import copy
import itertools
import os
import sys

import onnx
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics as MET  # noqa: E402
from pbc_data import F, STEPS  # noqa: E402

TORCH_SEED = 0
ONNX_OPSET_SEQ = 14


# ---------------------------------------------------------------- models


class Prep(nn.Module):
    """Inside the graph: NaN → training median (raw units), ln of skewed labs, standardisation
    with training constants, unmasked steps zeroed."""

    def __init__(self, median, log_mask, mean, std):
        super().__init__()
        self.register_buffer("median", torch.tensor(median, dtype=torch.float32))
        self.register_buffer("logf", torch.tensor(log_mask, dtype=torch.bool))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x, mask):
        x = torch.where(torch.isnan(x), self.median, x)
        x = torch.where(self.logf, torch.log(torch.clamp(x, min=1e-3)), x)
        z = (x - self.mean) / self.std
        real = mask.unsqueeze(-1) > 0.5
        z = torch.where(real, z, torch.zeros_like(z))
        return z


def last_valid(t, mask):
    """Rows of t [N, T, D] at each sequence's last step with mask 1 (by mask, not by T-1)."""
    T = mask.shape[1]
    pos = torch.arange(T, dtype=mask.dtype).unsqueeze(0) + 1.0
    idx = ((mask * pos).max(dim=1).values - 1.0).clamp(min=0.0).long()
    return torch.gather(t, 1, idx.view(-1, 1, 1).expand(-1, 1, t.shape[2])).squeeze(1)


class Head(nn.Module):
    """Logit = MLP([summary, newest step]) + linear(newest step)."""

    def __init__(self, d, hidden, dropout):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d + F, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.lin = nn.Linear(F, 1)

    def forward(self, summary, newest):
        return self.mlp(torch.cat([summary, newest], dim=1)) + self.lin(newest)


class GruModel(nn.Module):
    """GRU over the steps from newest to oldest (so left padding never reaches the gathered
    state: invariant to how many empty steps precede the first visit), state gathered at the
    last valid step of the reversed sequence by mask."""

    def __init__(self, prep, hidden, dropout):
        super().__init__()
        self.prep = prep
        self.gru = nn.GRU(F + 1, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = Head(hidden, 16, dropout)

    def forward(self, x, mask):
        z = self.prep(x, mask)
        inp = torch.cat([z, mask.unsqueeze(-1)], dim=2)
        out, _ = self.gru(torch.flip(inp, dims=[1]))
        h = last_valid(out, torch.flip(mask, dims=[1]))
        newest = last_valid(z, mask)
        return torch.sigmoid(self.head(self.drop(h), newest))


class AttnModel(nn.Module):
    """2-layer transformer encoder, key padding mask from `mask`, position = bins back from the
    newest step (learned embedding), masked mean pooling."""

    def __init__(self, prep, d_model, dropout):
        super().__init__()
        self.prep = prep
        self.proj = nn.Linear(F + 1, d_model)
        self.pos = nn.Embedding(STEPS, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 2 * d_model, dropout, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = Head(d_model, 16, dropout)

    def forward(self, x, mask):
        z = self.prep(x, mask)
        T = mask.shape[1]
        back = torch.clamp(T - 1 - torch.arange(T), max=STEPS - 1)
        e = self.proj(torch.cat([z, mask.unsqueeze(-1)], dim=2)) + self.pos(back).unsqueeze(0)
        h = self.enc(e, src_key_padding_mask=mask < 0.5)
        w = mask.unsqueeze(-1)
        pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
        newest = last_valid(z, mask)
        return torch.sigmoid(self.head(pooled, newest))


def make_model(kind, prep, cfg):
    torch.manual_seed(TORCH_SEED)
    if kind == "gru":
        return GruModel(copy.deepcopy(prep), cfg["hidden"], cfg["dropout"])
    return AttnModel(copy.deepcopy(prep), cfg["hidden"], cfg["dropout"])


def predict(model, X, M):
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(X, dtype=torch.float32), torch.tensor(M, dtype=torch.float32)).numpy().reshape(-1)


def train(kind, prep, cfg, X, M, Y, epochs, X_val=None, M_val=None, Y_val=None):
    """Adam + BCE, batch 64, seeded shuffles. With validation data, returns the per-epoch
    validation AUCs too (the epoch count is chosen on them)."""
    model = make_model(kind, prep, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    gen = torch.Generator().manual_seed(TORCH_SEED)
    Xt = torch.tensor(X, dtype=torch.float32)
    Mt = torch.tensor(M, dtype=torch.float32)
    Yt = torch.tensor(Y, dtype=torch.float32).view(-1, 1)
    loss_fn = nn.BCELoss()
    val_auc = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(Yt), generator=gen)
        for b in range(0, len(perm), 64):
            idx = perm[b : b + 64]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx], Mt[idx]), Yt[idx])
            loss.backward()
            opt.step()
        if X_val is not None:
            val_auc.append(MET.roc_auc(Y_val, predict(model, X_val, M_val)))
    return model, val_auc


GRIDS = {
    "gru": [
        {"hidden": h, "dropout": 0.1, "lr": 3e-3, "wd": wd}
        for h, wd in itertools.product([16, 32], [1e-4, 1e-3])
    ],
    "attention": [
        {"hidden": d, "dropout": 0.1, "lr": 1e-3, "wd": wd}
        for d, wd in itertools.product([16, 32], [1e-4, 1e-3])
    ],
}
MAX_EPOCHS = 40


# ---------------------------------------------------------------- export


def export_onnx(model, path, X_example, M_example):
    model.eval()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(
        model,
        (torch.tensor(X_example, dtype=torch.float32), torch.tensor(M_example, dtype=torch.float32)),
        path,
        input_names=["x", "mask"],
        output_names=["p"],
        opset_version=ONNX_OPSET_SEQ,
        dynamic_axes={"x": {0: "N", 1: "T"}, "mask": {0: "N", 1: "T"}, "p": {0: "N"}},
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(path), full_check=True)


def reference_outputs(model, X, M):
    """The framework's float64 outputs for the golden cases."""
    m64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m64(torch.tensor(X, dtype=torch.float64), torch.tensor(M, dtype=torch.float64)).numpy().reshape(-1)

"""PyTorch CPU training step of the 2-layer softmax model of dualform's `train` bench (the model of the `softmax`
experiment), written the way a PyTorch user would.

In-context regression, d = N = 10 (tokens of width E = 11), fresh tasks every step. Per layer two heads, each with
W_Q, W_K, W_V, P of E x E; every token attends to the N context tokens with softmax(q . k / sqrt(E)); residual
update; the first layer updates every token, the last only the query (whose last entry is minus the prediction).
AdamW (b2 0.98), learning rate 0.01, gradient clipping. Prints one line: RESULT ... ms_per_step=...

usage: python torch_softmax.py [--layers 2] [--steps 300] [--batch 2048] [--threads 2]
"""
import argparse
import math
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=2048)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
D, N, H = 10, 10, 2
E = D + 1
# Per layer: W_Q, W_K, W_V stacked over heads (H E x E), P as one E x H E matrix.
params = []
for _ in range(a.layers):
    params += [torch.nn.Parameter(torch.randn(H * E, E) * 0.1) for _ in range(3)]
    params.append(torch.nn.Parameter(torch.randn(E, H * E) * 0.1))
opt = torch.optim.AdamW(params, lr=0.01, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)


def sample(m):
    w = torch.randn(m, D, 1)
    x = torch.rand(m, N + 1, D) - 0.5
    y = x @ w
    h = torch.cat([x, y], 2)
    h[:, N, D] = 0.0
    return h, y[:, N, 0]


def heads(x):  # (M, T, H E) -> (M, H, T, E)
    return x.view(x.shape[0], x.shape[1], H, E).transpose(1, 2)


def forward(h):
    for k in range(a.layers):
        wq, wk, wv, p = params[4 * k : 4 * k + 4]
        tokens = h if k + 1 < a.layers else h[:, N:]
        c = h[:, :N]
        q, kk, v = heads(tokens @ wq.T), heads(c @ wk.T), heads(c @ wv.T)
        att = torch.softmax(q @ kk.transpose(2, 3) / math.sqrt(E), dim=-1)  # (M, H, T, N)
        o = (att @ v).transpose(1, 2).reshape(tokens.shape[0], tokens.shape[1], H * E)
        h = tokens + o @ p.T
    return -h[:, -1, D]


t0 = time.perf_counter()
for step in range(a.steps):
    h, yq = sample(a.batch)
    loss = 0.5 * ((forward(h) - yq) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1e-3)
    opt.step()
el = time.perf_counter() - t0
print(
    f"RESULT peer=torch-{torch.__version__} model=softmax-{a.layers} threads={torch.get_num_threads()} "
    f"steps={a.steps} batch={a.batch} ms_per_step={el * 1e3 / a.steps:.3f} final_loss={loss.item():.5f}"
)

"""PyTorch CPU training step of the models of dualform's `train` bench, written the way a PyTorch user would.

In-context regression, d = N = 10 (tokens of width E = 11), fresh tasks every step, AdamW.
--layers 1: one layer in merged form (A = W_K^T W_Q, B = P W_V), the query's prediction only, as dualform trains it.
--layers K >= 2 (or --layers 1 --full): K full LSA layers (W_Q, W_K, W_V, P per layer, every token updated),
gradient clipping. --save FILE writes the layers' W_Q, W_K, W_V, P as the safetensors file that
`dualform inspect` reads (the reference layout: [E, E] tensors for one layer, [K, E, E] with the layer index first
for K layers; needs the safetensors package).
Prints one line: RESULT ... ms_per_step=...

usage: python torch_lsa.py --layers K [--full] [--steps 300] [--batch 2048] [--threads 2] [--save FILE]
"""
import argparse
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--layers", type=int, default=1)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=2048)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--full", action="store_true", help="at --layers 1, the full layer instead of the merged form")
ap.add_argument("--save", help="write the full layers' matrices to this safetensors file")
a = ap.parse_args()
if a.save and a.layers == 1 and not a.full:
    ap.error("--save writes a full layer: add --full at --layers 1")
torch.set_num_threads(a.threads)
torch.manual_seed(0)
D, N = 10, 10
E = D + 1


def sample(m):
    w = torch.randn(m, D, 1)
    x = torch.rand(m, N + 1, D) - 0.5
    y = x @ w
    h = torch.cat([x, y], 2)
    h[:, N, D] = 0.0
    return h, y[:, N, 0]


if a.layers == 1 and not a.full:
    params = [torch.nn.Parameter(torch.randn(E, E) * 0.002) for _ in range(2)]
    lr, clip = 1e-3, None

    def forward(h):
        a_kq, b_pv = params
        e, q = h[:, :N], h[:, N]
        s = (e @ (q @ a_kq.T).unsqueeze(2)) / N  # (M, N, 1): e_j . A q
        z = (e.transpose(1, 2) @ s).squeeze(2)  # (M, E)
        return -(z @ b_pv.T)[:, D]
else:
    params = [torch.nn.Parameter(torch.randn(E, E) * 0.015) for _ in range(4 * a.layers)]
    lr, clip = 1e-3, (1e-3 if a.layers <= 2 else 10.0)

    def forward(h):
        for k in range(a.layers):
            wq, wk, wv, p = params[4 * k : 4 * k + 4]
            c = h[:, :N]
            s = (h @ wq.T) @ (c @ wk.T).transpose(1, 2)  # (M, N + 1, N)
            h = h + (s @ (c @ wv.T)) @ p.T
        return -h[:, N, D]


opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
t0 = time.perf_counter()
for step in range(a.steps):
    h, yq = sample(a.batch)
    loss = 0.5 * ((forward(h) - yq) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
el = time.perf_counter() - t0
if a.save:
    from safetensors.torch import save_file

    def stacked(which):
        mats = [params[4 * k + which].detach().float() for k in range(a.layers)]
        return (mats[0] if a.layers == 1 else torch.stack(mats)).contiguous()

    save_file({name: stacked(i) for i, name in enumerate(["W_Q", "W_K", "W_V", "P"])}, a.save)
print(
    f"RESULT peer=torch-{torch.__version__} model=lsa-{a.layers}{'-full' if a.full else ''} threads={torch.get_num_threads()} steps={a.steps} "
    f"batch={a.batch} ms_per_step={el * 1e3 / a.steps:.3f} final_loss={loss.item():.5f}"
)

"""JAX CPU training step of the models of dualform's `train` bench (the models of torch_lsa.py); the whole step
(sampling, forward, gradient, AdamW) is one jitted function, compiled before the clock starts.

Threads: XLA_FLAGS="--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2" (compare.py sets it).
Prints one line: RESULT ... ms_per_step=...

usage: python jax_lsa.py --layers K [--steps 300] [--batch 2048]
"""
import argparse
import time

import jax
import jax.numpy as jnp

ap = argparse.ArgumentParser()
ap.add_argument("--layers", type=int, default=1)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=2048)
a = ap.parse_args()
D, N = 10, 10
E = D + 1
L = a.layers
key0 = jax.random.PRNGKey(0)
if L == 1:
    params = 0.002 * jax.random.normal(key0, (2, E, E))
    clip = None
else:
    params = 0.015 * jax.random.normal(key0, (L, 4, E, E))
    clip = 1e-3 if L <= 2 else 10.0
lr = 1e-3


def sample(key, m):
    k1, k2 = jax.random.split(key)
    w = jax.random.normal(k1, (m, D, 1))
    x = jax.random.uniform(k2, (m, N + 1, D), minval=-0.5, maxval=0.5)
    y = x @ w
    h = jnp.concatenate([x, y], 2).at[:, N, D].set(0.0)
    return h, y[:, N, 0]


def predict(p, h):
    if L == 1:
        a_kq, b_pv = p
        e, q = h[:, :N], h[:, N]
        s = jnp.einsum("mne,me->mn", e, q @ a_kq.T) / N
        z = jnp.einsum("mne,mn->me", e, s)
        return -(z @ b_pv.T)[:, D]
    for k in range(L):
        wq, wk, wv, pp = p[k]
        c = h[:, :N]
        s = (h @ wq.T) @ jnp.swapaxes(c @ wk.T, 1, 2)
        h = h + (s @ (c @ wv.T)) @ pp.T
    return -h[:, N, D]


def loss_fn(p, h, yq):
    return 0.5 * jnp.mean((predict(p, h) - yq) ** 2)


b1, b2, eps = 0.9, 0.98, 1e-8


@jax.jit
def step_fn(p, m, v, t, key):
    key, sub = jax.random.split(key)
    h, yq = sample(sub, a.batch)
    loss, g = jax.value_and_grad(loss_fn)(p, h, yq)
    if clip is not None:
        g = g * jnp.minimum(1.0, clip / (jnp.linalg.norm(g) + 1e-12))
    t = t + 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v, t, key, loss


m = jnp.zeros_like(params)
v = jnp.zeros_like(params)
t = jnp.zeros(())
key = jax.random.PRNGKey(1)
step_fn.lower(params, m, v, t, key).compile()
params, m, v, t, key, loss = step_fn(params, m, v, t, key)  # first call outside the clock
jax.block_until_ready(params)
t0 = time.perf_counter()
for _ in range(a.steps):
    params, m, v, t, key, loss = step_fn(params, m, v, t, key)
jax.block_until_ready(params)
el = time.perf_counter() - t0
print(
    f"RESULT peer=jax-{jax.__version__} model=lsa-{L} steps={a.steps} batch={a.batch} "
    f"ms_per_step={el * 1e3 / a.steps:.3f} final_loss={float(loss):.5f}"
)

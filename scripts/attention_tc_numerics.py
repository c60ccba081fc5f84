"""Emulates the numerics of the cuda backend's tensor-core attention (cuda-attention-tc.cu) in
numpy: q pre-scaled by scale * log2(e) and rounded to bf16, k and v rounded to bf16, an online
softmax over 64-key tiles in the log2 domain with p rounded to bf16 before P V (its running sum
unrounded). Prints the emulated nmse against exact attention next to the tolerance the tests
use (tol_cuda_attention: 2 x (nmse of cpu-ref on bf16-rounded q, k, v + u^2 / 3), u = 2^-8), on
the shapes of test-cuda.cpp's tensor-core cases with their data distribution (q uniform +-3,
k and v uniform +-1). A check of the bound's margin, not a fixture: nothing reads its output.

usage: python3 scripts/attention_tc_numerics.py   (about a minute)
"""
import numpy as np

def bf16(x):
    x = np.asarray(x, dtype=np.float32)
    b = x.view(np.uint32).astype(np.uint64)
    r = ((b + 0x7fff + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).astype(np.float64)
rng = np.random.default_rng(1)
def run(d, n, p0, c, window=0, sink=0, H=2):
    scale = 1/np.sqrt(d)
    q = rng.uniform(-3,3,(n,H,d)).astype(np.float32)
    k = rng.uniform(-1,1,(c,d)).astype(np.float32); v = rng.uniform(-1,1,(c,d)).astype(np.float32)
    pos = p0 + np.arange(n)
    j = np.arange(c)
    def vis(p):
        m = j <= p
        if window: m &= (j > p - window) | (j < sink)
        return m
    def ref(qq, kk, vv):
        out = np.zeros((n,H,d))
        for i in range(n):
            m = vis(pos[i])
            for hh in range(H):
                s = (kk[m] @ qq[i,hh].astype(np.float64)) * scale
                w = np.exp(s - s.max()); out[i,hh] = w @ vv[m] / w.sum()
        return out
    exact = ref(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
    rounded = ref(bf16(q), bf16(k), bf16(v))
    L2 = np.log2(np.e)
    kb, vb = bf16(k), bf16(v)
    dev = np.zeros((n,H,d))
    for i in range(n):
        msk = vis(pos[i])
        for hh in range(H):
            qs = bf16(q[i,hh]*np.float32(scale*L2))
            mrun = -np.inf; l = 0; o = np.zeros(d)
            for t0 in range(0, pos[i]+1, 64):
                sl = slice(t0, min(t0+64, c)); mm = msk[sl]
                if not mm.any(): continue
                s = kb[sl] @ qs; s[~mm] = -np.inf
                mn = max(mrun, s.max()); corr = 2.0**(mrun - mn)
                p = 2.0**(s - mn); l = l*corr + p.sum(); o = o*corr + bf16(p.astype(np.float32)) @ vb[sl]
                mrun = mn
            dev[i,hh] = o / l
    nm = lambda a: ((a-exact)**2).sum()/(exact**2).sum()
    qkv = nm(rounded); u = 1/256
    print(f"d{d} n{n} p0 {p0} w{window} s{sink}: dev nmse {nm(dev):.3g} qkv {qkv:.3g} bound {2*(qkv+u*u/3):.3g}")
run(128, 200, 1000, 1200)
run(64, 200, 1000, 1200)
run(64, 300, 900, 1200, 100, 5)
run(128, 300, 900, 1200, 1, 0)
run(64, 64, 173, 300)

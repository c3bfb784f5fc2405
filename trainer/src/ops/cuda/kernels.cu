// The trainer's own CUDA kernels: the GPU side of the custom ops in trainer/src/ops/ (depthwise
// convolution and its gradients, fused BatchNorm with its activation, max pooling with the
// first-maximum rule, activations and residual additions). trainer/build.rs compiles this file to
// PTX (ops.ptx) in builds with the `cuda` feature, where ops/cuda/mod.rs launches the kernels,
// and for the host in every build (emulate.cpp), where the unit tests of ops/cuda_host.rs run
// them against the CPU ops. So every kernel must be correct for any block size, one included.
//
// Each kernel computes what the CPU op computes, with the same conventions (gradient 0 at the
// clamp points, the first maximum of a pooling window takes its gradient, statistics summed in
// double), so the CUDA path agrees with the CPU op to rounding. Gradients are gathered rather
// than scattered with atomics: the results do not depend on thread scheduling, so a run repeats
// exactly. Sizes are int: the host side refuses tensors of 2^31 elements or more.

// The host build (emulate.cpp, for the unit tests) defines KERNEL to give the functions a prefix.
#ifndef KERNEL
#define KERNEL(name) extern "C" __global__ void name
#endif

#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_RELU6 2
#define ACT_LEAKY 3

__device__ __forceinline__ float act_f(int act, float slope, float v) {
    switch (act) {
        case ACT_RELU: return fmaxf(v, 0.0f);
        case ACT_RELU6: return fminf(fmaxf(v, 0.0f), 6.0f);
        case ACT_LEAKY: return v > 0.0f ? v : slope * v;
        default: return v;
    }
}

// The derivative, of the input or equally of the output (activation.rs explains why).
__device__ __forceinline__ float act_df(int act, float slope, float v) {
    switch (act) {
        case ACT_RELU: return v > 0.0f ? 1.0f : 0.0f;
        case ACT_RELU6: return (v > 0.0f && v < 6.0f) ? 1.0f : 0.0f;
        case ACT_LEAKY: return v > 0.0f ? 1.0f : slope;
        default: return 1.0f;
    }
}

#define GRID_STRIDE(i, n) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// Sum over the block of one double per thread; the result is valid in thread 0. blockDim.x is a
// power of two of at most 1024.
__device__ double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    double r = shared[0];
    __syncthreads();
    return r;
}

// ---- activations ---------------------------------------------------------------------------

KERNEL(act_fwd)(int n, int act, float slope, const float* x, float* y) {
    GRID_STRIDE(i, n) { y[i] = act_f(act, slope, x[i]); }
}

// out = g · f'(x)
KERNEL(act_grad)(int n, int act, float slope, const float* x, const float* g,
                                    float* out) {
    GRID_STRIDE(i, n) { out[i] = g[i] * act_df(act, slope, x[i]); }
}

// out = f(y + r); act may be ACT_NONE.
KERNEL(residual_fwd)(int n, int act, float slope, const float* y,
                                        const float* r, float* out) {
    GRID_STRIDE(i, n) { out[i] = act_f(act, slope, y[i] + r[i]); }
}

// ---- depthwise convolution -----------------------------------------------------------------
// x [n, c, h, w], weight [c, 1, k, k], output [n, c, oh, ow], zero padding p, stride s.

KERNEL(dw_fwd)(int n, int c, int h, int w, int k, int s, int p, int oh, int ow,
                                  const float* x, const float* wt, float* y) {
    GRID_STRIDE(i, n * c * oh * ow) {
        int ox = i % ow;
        int oy = (i / ow) % oh;
        int plane = i / (ow * oh);
        const float* xp = x + (size_t)plane * h * w;
        const float* wp = wt + (plane % c) * k * k;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * s - p + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                int ix = ox * s - p + kx;
                if (ix < 0 || ix >= w) continue;
                acc += xp[iy * w + ix] * wp[ky * k + kx];
            }
        }
        y[i] = acc;
    }
}

// dL/dx: each input element gathers the output gradients of the windows that read it.
KERNEL(dw_grad_x)(int n, int c, int h, int w, int k, int s, int p, int oh,
                                     int ow, const float* g, const float* wt, float* gx) {
    GRID_STRIDE(i, n * c * h * w) {
        int ix = i % w;
        int iy = (i / w) % h;
        int plane = i / (w * h);
        const float* gp = g + (size_t)plane * oh * ow;
        const float* wp = wt + (plane % c) * k * k;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int ty = iy + p - ky;
            if (ty < 0 || ty % s != 0 || ty / s >= oh) continue;
            for (int kx = 0; kx < k; kx++) {
                int tx = ix + p - kx;
                if (tx < 0 || tx % s != 0 || tx / s >= ow) continue;
                acc += gp[(ty / s) * ow + tx / s] * wp[ky * k + kx];
            }
        }
        gx[i] = acc;
    }
}

// dL/dw: one block per (channel, tap), summing g · x over the batch and the output plane.
KERNEL(dw_grad_w)(int n, int c, int h, int w, int k, int s, int p, int oh,
                                     int ow, const float* x, const float* g, float* gw) {
    extern __shared__ double shared[];
    int ch = blockIdx.x / (k * k);
    int tap = blockIdx.x % (k * k);
    int ky = tap / k, kx = tap % k;
    int per_plane = oh * ow;
    double acc = 0.0;
    for (int j = threadIdx.x; j < n * per_plane; j += blockDim.x) {
        int b = j / per_plane;
        int o = j % per_plane;
        int oy = o / ow, ox = o % ow;
        int iy = oy * s - p + ky, ix = ox * s - p + kx;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
        size_t plane = (size_t)b * c + ch;
        acc += (double)(g[plane * per_plane + o] * x[plane * h * w + iy * w + ix]);
    }
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0) gw[blockIdx.x] = (float)total;
}

// ---- BatchNorm -----------------------------------------------------------------------------
// x [n, c, plane]; params [4, c] = [gamma; beta; mean; var].

// Per-channel mean and biased variance in two passes (as the CPU op), one block per channel;
// out [2, c].
KERNEL(bn_stats)(int n, int c, int plane, const float* x, float* out) {
    extern __shared__ double shared[];
    int ch = blockIdx.x;
    int count = n * plane;
    double acc = 0.0;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        acc += x[((size_t)(j / plane) * c + ch) * plane + j % plane];
    }
    double mean = block_sum(acc, shared) / count;
    float m = (float)mean;
    acc = 0.0;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        float d = x[((size_t)(j / plane) * c + ch) * plane + j % plane] - m;
        acc += d * d;
    }
    double var = block_sum(acc, shared) / count;
    if (threadIdx.x == 0) {
        out[ch] = (float)mean;
        out[c + ch] = (float)var;
    }
}

__device__ __forceinline__ float bn_inv_std(const float* params, int c, int ch, double eps) {
    return (float)(1.0 / sqrt((double)params[3 * c + ch] + eps));
}

KERNEL(bn_fwd)(int n, int c, int plane, double eps, int act, float slope,
                                  const float* x, const float* params, float* y) {
    GRID_STRIDE(i, n * c * plane) {
        int ch = (i / plane) % c;
        float scale = params[ch] / (float)sqrt((double)params[3 * c + ch] + eps);
        float shift = params[c + ch] - params[2 * c + ch] * scale;
        y[i] = act_f(act, slope, x[i] * scale + shift);
    }
}

// Backward, first pass: per channel Σdz and Σdz·(x − mean), with dz = dy · f'(y) the gradient
// before the activation. One block per channel. Writes the sums (double) for the second pass
// and the parameter gradients [dgamma; dbeta; 0; 0] at dp.
KERNEL(bn_grad_sums)(int n, int c, int plane, double eps, int act, float slope,
                                        const float* x, const float* dy, const float* y,
                                        const float* params, double* sums, float* dp) {
    extern __shared__ double shared[];
    int ch = blockIdx.x;
    int count = n * plane;
    float mean = params[2 * c + ch];
    double a = 0.0, b = 0.0;
    for (int j = threadIdx.x; j < count; j += blockDim.x) {
        size_t at = ((size_t)(j / plane) * c + ch) * plane + j % plane;
        float dz = dy[at] * act_df(act, slope, y[at]);
        a += dz;
        b += dz * (x[at] - mean);
    }
    double sdz = block_sum(a, shared);
    double sdzx = block_sum(b, shared) / sqrt((double)params[3 * c + ch] + eps);
    if (threadIdx.x == 0) {
        sums[ch] = sdz;
        sums[c + ch] = sdzx;
        dp[ch] = (float)sdzx;
        dp[c + ch] = (float)sdz;
        dp[2 * c + ch] = 0.0f;
        dp[3 * c + ch] = 0.0f;
    }
}

// Backward, second pass: the input gradient; with batch statistics it includes their
// dependence on x (batch_stats != 0).
KERNEL(bn_grad_x)(int n, int c, int plane, double eps, int act, float slope,
                                     int batch_stats, const float* x, const float* dy,
                                     const float* y, const float* params, const double* sums,
                                     float* dx) {
    int count = n * plane;
    GRID_STRIDE(i, n * c * plane) {
        int ch = (i / plane) % c;
        float inv_std = bn_inv_std(params, c, ch, eps);
        float k = params[ch] * inv_std;
        float dz = dy[i] * act_df(act, slope, y[i]);
        if (batch_stats) {
            float mdz = (float)(sums[ch] / count);
            float mdzx = (float)(sums[c + ch] / count);
            float xhat = (x[i] - params[2 * c + ch]) * inv_std;
            dx[i] = k * (dz - mdz - xhat * mdzx);
        } else {
            dx[i] = k * dz;
        }
    }
}

// ---- max pooling ---------------------------------------------------------------------------
// x [planes, h, w] → y [planes, oh, ow], padding with −∞; the first maximum of a window wins.

__device__ __forceinline__ int pool_argmax(const float* xp, int h, int w, int k, int s, int p,
                                           int oy, int ox) {
    float best = -INFINITY;
    int at = -1;
    int y0 = oy * s - p, x0 = ox * s - p;
    for (int iy = max(y0, 0); iy < min(y0 + k, h); iy++) {
        for (int ix = max(x0, 0); ix < min(x0 + k, w); ix++) {
            float v = xp[iy * w + ix];
            if (v > best || at < 0) {
                best = v;
                at = iy * w + ix;
            }
        }
    }
    return at;
}

KERNEL(pool_fwd)(int planes, int h, int w, int k, int s, int p, int oh, int ow,
                                    const float* x, float* y) {
    GRID_STRIDE(i, planes * oh * ow) {
        int ox = i % ow;
        int oy = (i / ow) % oh;
        const float* xp = x + (size_t)(i / (ow * oh)) * h * w;
        y[i] = xp[pool_argmax(xp, h, w, k, s, p, oy, ox)];
    }
}

// Each input element gathers the gradients of the windows whose first maximum it is.
KERNEL(pool_grad)(int planes, int h, int w, int k, int s, int p, int oh, int ow,
                                     const float* x, const float* g, float* gx) {
    GRID_STRIDE(i, planes * h * w) {
        int ix = i % w;
        int iy = (i / w) % h;
        int plane = i / (w * h);
        const float* xp = x + (size_t)plane * h * w;
        const float* gp = g + (size_t)plane * oh * ow;
        int me = iy * w + ix;
        // Windows oy·s − p ≤ iy ≤ oy·s − p + k − 1.
        int oy0 = max(0, (iy + p - k + s) / s), oy1 = min(oh - 1, (iy + p) / s);
        int ox0 = max(0, (ix + p - k + s) / s), ox1 = min(ow - 1, (ix + p) / s);
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            for (int ox = ox0; ox <= ox1; ox++) {
                if (pool_argmax(xp, h, w, k, s, p, oy, ox) == me) acc += gp[oy * ow + ox];
            }
        }
        gx[i] = acc;
    }
}

// The CUDA kernels of kernels.cu compiled for the host, so that the unit tests check their
// arithmetic against the CPU ops on any machine, GPU or not (ops/cuda_host.rs). Each block runs
// as a single thread: every kernel is written so that any block size covers its work (strided
// loops, block sums), and one thread is a block size. What this cannot show (many threads at
// once, shared-memory limits, the driver's compilation) the GPU check does (scripts/gpu-check.sh).
// Only what the kernels use of CUDA is defined here.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <math.h>

using std::max;
using std::min;

struct Dim3 {
    unsigned x, y, z;
};
// Per test thread: the Rust tests run in parallel.
static thread_local Dim3 blockIdx, threadIdx, blockDim, gridDim;
static thread_local double emu_shared[1024];

#define __global__
#define __device__ static
#define __forceinline__ inline
#define __syncthreads()
// `extern __shared__ double shared[]` in a kernel: the block's shared memory.
#define __shared__ thread_local
#define shared emu_shared
#define KERNEL(name) extern "C" void mpox_emu_##name

#include "kernels.cu"

// Makes the next kernel call block `block` of a grid of `grid` one-thread blocks.
extern "C" void mpox_emu_block(unsigned block, unsigned grid) {
    blockIdx = {block, 0, 0};
    gridDim = {grid, 1, 1};
    threadIdx = {0, 0, 0};
    blockDim = {1, 1, 1};
}

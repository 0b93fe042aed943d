/* Weight gradient of a stride-1 depthwise 2-D convolution on channels_last (NHWC) float32 tensors.
 *
 *   grad_weight[c, i, j] = sum_{n, y, x} grad_out[n, y, x, c] * input[n, y - pad + i * dil, x - pad + j * dil, c]
 *
 * Taps outside the input are zero padding. Channels are contiguous in NHWC, so the sums are vectorised over
 * channels. For each output row, kernel row and block of 32 channels, register accumulators for all the kernel
 * row's taps run along the row, so each grad_out vector is loaded once for k taps. Rows are split between the
 * threads of an OpenMP region (PyTorch's pool). Each thread adds its row sums in double precision, and the threads'
 * sums are added at the end. Kernels up to MAX_KERNEL taps wide. Built at first use by rainmer/utils/native.py
 * and called through ctypes.
 */
#include <stdlib.h>

#define MAX_KERNEL 7
#define PARALLEL_WORK 2e5 /* multiply-adds below which one thread does it all */
#define LANES 16

typedef float vec16 __attribute__((vector_size(64), aligned(4)));

typedef struct {
    const float *input, *grad;
    double *acc; /* [kernel * kernel * channels] */
    long row_begin, row_end; /* output rows n * out_h + y */
    int in_h, in_w, out_h, out_w, channels, kernel, pad, dil;
} Job;

static inline vec16 load(const float *p) { return *(const vec16 *)p; }

/* One output row against one input row (one kernel row i): acc_i[j * C + c] += sum_x g[x, c] * in[x + off_j, c]
 * for the channels c0 + [first_lane, blocks * LANES). K is a constant after inlining. */
static inline __attribute__((always_inline)) void row_taps(const float *grow, const float *irow, double *acc_i,
                                                           const Job *job, int c0, int blocks, int first_lane,
                                                           const int K) {
    const int C = job->channels, dil = job->dil, pad = job->pad, in_w = job->in_w, out_w = job->out_w;
    vec16 sum[MAX_KERNEL][2];
    for (int j = 0; j < K; ++j) sum[j][0] = sum[j][1] = (vec16){0};
    int x_begin = pad, x_end = in_w - (K - 1) * dil + pad; /* every tap inside the input */
    if (x_end > out_w) x_end = out_w;
    if (x_begin > x_end) x_begin = x_end = out_w;
    for (int x = 0; x < out_w; ++x) {
        if (x == x_begin) { /* interior: no bounds checks */
            for (; x < x_end; ++x) {
                const float *g = grow + (long)x * C + c0, *in = irow + (long)(x - pad) * C + c0;
                for (int b = 0; b < blocks; ++b) {
                    const vec16 gv = load(g + LANES * b);
                    for (int j = 0; j < K; ++j) sum[j][b] += gv * load(in + (long)j * dil * C + LANES * b);
                }
            }
            if (x >= out_w) break;
        }
        const float *g = grow + (long)x * C + c0;
        for (int j = 0; j < K; ++j) {
            const int ix = x - pad + j * dil;
            if (ix < 0 || ix >= in_w) continue;
            const float *in = irow + (long)ix * C + c0;
            for (int b = 0; b < blocks; ++b) sum[j][b] += load(g + LANES * b) * load(in + LANES * b);
        }
    }
    for (int j = 0; j < K; ++j)
        for (int b = 0; b < blocks; ++b)
            for (int l = b ? 0 : first_lane; l < LANES; ++l) acc_i[(long)j * C + c0 + LANES * b + l] += sum[j][b][l];
}

static void row_taps_scalar(const float *grow, const float *irow, double *acc_i, const Job *job) {
    const int C = job->channels;
    for (int j = 0; j < job->kernel; ++j)
        for (int c = 0; c < C; ++c) {
            float sum = 0.f;
            for (int x = 0; x < job->out_w; ++x) {
                const int ix = x - job->pad + j * job->dil;
                if (ix >= 0 && ix < job->in_w) sum += grow[(long)x * C + c] * irow[(long)ix * C + c];
            }
            acc_i[(long)j * C + c] += sum;
        }
}

static inline __attribute__((always_inline)) void row_all_channels(const float *grow, const float *irow,
                                                                   double *acc_i, const Job *job, const int K) {
    const int C = job->channels;
    int c = 0;
    for (; c + 2 * LANES <= C; c += 2 * LANES) row_taps(grow, irow, acc_i, job, c, 2, 0, K);
    if (c + LANES <= C) {
        row_taps(grow, irow, acc_i, job, c, 1, 0, K);
        c += LANES;
    }
    if (c < C) row_taps(grow, irow, acc_i, job, C - LANES, 1, c - (C - LANES), K); /* overlapping last block */
}

static void run_job(const Job *job) {
    const int C = job->channels, K = job->kernel;
    for (long row = job->row_begin; row < job->row_end; ++row) {
        const long n = row / job->out_h;
        const int y = (int)(row % job->out_h);
        const float *grow = job->grad + row * job->out_w * (long)C;
        for (int i = 0; i < K; ++i) {
            const int iy = y - job->pad + i * job->dil;
            if (iy < 0 || iy >= job->in_h) continue;
            const float *irow = job->input + (n * job->in_h + iy) * job->in_w * (long)C;
            double *acc_i = job->acc + (long)i * K * C;
            if (C < LANES) row_taps_scalar(grow, irow, acc_i, job);
            else if (K == 3) row_all_channels(grow, irow, acc_i, job, 3);
            else if (K == 5) row_all_channels(grow, irow, acc_i, job, 5);
            else if (K == 7) row_all_channels(grow, irow, acc_i, job, 7);
            else row_taps_scalar(grow, irow, acc_i, job);
        }
    }
}

/* grad_weight: [channels, kernel, kernel] (PyTorch's [C, 1, k, k]), contiguous.
 * Returns 0, -1 when out of memory, -2 for a kernel wider than MAX_KERNEL. */
int depthwise_weight_grad(const float *input, const float *grad, float *grad_weight, int batch, int channels,
                          int in_h, int in_w, int out_h, int out_w, int kernel, int pad, int dil, int threads) {
    if (kernel > MAX_KERNEL) return -2;
    const long rows = (long)batch * out_h, taps = (long)kernel * kernel;
    const double work = (double)rows * out_w * channels * taps; /* multiply-adds */
    if (work < PARALLEL_WORK) threads = 1;                         /* waking threads would cost more */
    if (threads > rows) threads = (int)rows;
    if (threads < 1) threads = 1;
    double *acc = calloc((size_t)threads * taps * channels, sizeof(double));
    if (!acc) return -1;
    /* With OpenMP this runs on the process's OpenMP pool (PyTorch's, whose libgomp is already loaded);
     * without it, on this thread. */
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) {
        const Job job = {input, grad, acc + t * taps * channels, rows * t / threads, rows * (t + 1) / threads,
                         in_h, in_w, out_h, out_w, channels, kernel, pad, dil};
        run_job(&job);
    }
    for (long c = 0; c < channels; ++c)
        for (long tap = 0; tap < taps; ++tap) {
            double sum = 0.0;
            for (int t = 0; t < threads; ++t) sum += acc[(t * taps + tap) * channels + c];
            grad_weight[c * taps + tap] = (float)sum;
        }
    free(acc);
    return 0;
}

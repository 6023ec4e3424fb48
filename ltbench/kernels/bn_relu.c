/* Training-mode batch norm followed by ReLU (optionally with a residual added before the
 * ReLU), forward and backward, on channels-last float32 activations viewed as M rows of C
 * channels.
 *
 * PyTorch runs these as separate operators, each with its own passes over the activation;
 * on a CPU the CIFAR ResNets' activations do not fit in cache, so those passes, not
 * arithmetic, are the cost. Here the forward makes 2 passes (statistics; normalise + add +
 * ReLU) and the backward 2 (per-channel sums; input gradient). The ReLU's mask is
 * recomputed from x in the backward rather than read from memory (exact: the same float
 * operations as the forward, built without contraction into FMA), except with a residual,
 * whose mask is read from y.
 *
 * Statistics are sums shifted by the first row (so the variance does not cancel), in float
 * over blocks of BLOCK rows and in double across blocks; each thread sums a fixed range of
 * rows and the threads' sums are added in order, so for a given thread count the results
 * are the same on every run.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define BLOCK 64      /* rows summed in float before they join the double totals */
#define CB 64         /* channels handled together: their float accumulators live on the stack */

/* The normalised pre-activation, x * scale + shift. One definition for the forward and
 * both backward passes, which recompute the ReLU's mask from it and must get the forward's
 * exact floats. */
static inline float affine(float x, float scale, float shift)
{
    return x * scale + shift;
}

/* The fixed range of rows this thread takes, so that sums are added in the same order on
 * every run. Called inside a parallel region. */
static inline void thread_rows(long M, long *lo, long *hi)
{
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *lo = M * t / nt;
    *hi = M * (t + 1) / nt;
}

/* ---------------------------------------------------------------- per-block kernels
 * Each takes one block of at most CB channels (c0 .. c0 + cb) of rows lo .. hi. */

static void
sums_block(const float *x, long lo, long hi, long C, long c0, long cb,
           const float *ref, double *sum, double *sumsq)
{
    float s[CB], q[CB];
    for (long r0 = lo; r0 < hi; r0 += BLOCK) {
        long r1 = r0 + BLOCK < hi ? r0 + BLOCK : hi;
        for (long c = 0; c < cb; c++) { s[c] = 0.f; q[c] = 0.f; }
        for (long r = r0; r < r1; r++) {
            const float *row = x + r * C + c0;
            for (long c = 0; c < cb; c++) {
                float d = row[c] - ref[c];
                s[c] += d;
                q[c] += d * d;
            }
        }
        for (long c = 0; c < cb; c++) { sum[c] += s[c]; sumsq[c] += q[c]; }
    }
}

static void
normalise_block(const float *x, const float *res, float *y, long lo, long hi, long C, long c0,
                long cb, const float *scale, const float *shift)
{
    for (long r = lo; r < hi; r++) {
        const float *xr = x + r * C + c0;
        float *yr = y + r * C + c0;
        if (res) {
            const float *rr = res + r * C + c0;
            for (long c = 0; c < cb; c++) {
                float v = affine(xr[c], scale[c], shift[c]) + rr[c];
                yr[c] = v > 0.f ? v : 0.f;
            }
        } else {
            for (long c = 0; c < cb; c++) {
                float v = affine(xr[c], scale[c], shift[c]);
                yr[c] = v > 0.f ? v : 0.f;
            }
        }
    }
}

/* dz = dy where the ReLU passed it; sums of dz and of dz * (x - mean). With y given (the
 * residual case) the mask is y > 0 and dz is written out, as the residual's gradient. */
static void
grad_sums_block(const float *dy, const float *x, const float *y, float *dz, long lo, long hi,
                long C, long c0, long cb, const float *scale, const float *shift,
                const float *mean, double *sdz, double *sdzx)
{
    float s[CB], q[CB];
    for (long r0 = lo; r0 < hi; r0 += BLOCK) {
        long r1 = r0 + BLOCK < hi ? r0 + BLOCK : hi;
        for (long c = 0; c < cb; c++) { s[c] = 0.f; q[c] = 0.f; }
        for (long r = r0; r < r1; r++) {
            const float *g = dy + r * C + c0, *xr = x + r * C + c0;
            if (y) {
                const float *yr = y + r * C + c0;
                float *dzr = dz + r * C + c0;
                for (long c = 0; c < cb; c++) {
                    float d = yr[c] > 0.f ? g[c] : 0.f;
                    dzr[c] = d;
                    s[c] += d;
                    q[c] += d * (xr[c] - mean[c]);
                }
            } else {
                for (long c = 0; c < cb; c++) {
                    float d = affine(xr[c], scale[c], shift[c]) > 0.f ? g[c] : 0.f;
                    s[c] += d;
                    q[c] += d * (xr[c] - mean[c]);
                }
            }
        }
        for (long c = 0; c < cb; c++) { sdz[c] += s[c]; sdzx[c] += q[c]; }
    }
}

/* dx = k * dz + a * x + b, dz read back (residual case) or recomputed from dy and x. */
static void
grad_input_block(const float *dy, const float *x, const float *dz, float *dx, long lo, long hi,
                 long C, long c0, long cb, const float *scale, const float *shift,
                 const float *k, const float *a, const float *b)
{
    for (long r = lo; r < hi; r++) {
        const float *xr = x + r * C + c0;
        float *o = dx + r * C + c0;
        if (dz) {
            const float *d = dz + r * C + c0;
            for (long c = 0; c < cb; c++) o[c] = k[c] * d[c] + a[c] * xr[c] + b[c];
        } else {
            const float *g = dy + r * C + c0;
            for (long c = 0; c < cb; c++) {
                float d = affine(xr[c], scale[c], shift[c]) > 0.f ? g[c] : 0.f;
                o[c] = k[c] * d + a[c] * xr[c] + b[c];
            }
        }
    }
}

/* Runs CALL on each block of at most CB channels: c0 is the block's first channel, cb its
 * size. (Specialising cb to constants made the 16-channel forward 2.5x slower here: the
 * vectoriser then unrolls the channel loop instead of vectorising it.) */
#define FOR_BLOCK(C, c0, cb, CALL)                                               \
    for (long c0 = 0; c0 < (C); c0 += CB) {                                      \
        long cb = (C) - c0 < CB ? (C) - c0 : CB;                                 \
        CALL;                                                                    \
    }

/* Each thread's two per-channel double sums, added across threads in thread order. */
static void reduce_in_order(const double *part, int threads, long C, double *a, double *b)
{
    for (long c = 0; c < C; c++) { a[c] = 0.0; b[c] = 0.0; }
    for (int t = 0; t < threads; t++)
        for (long c = 0; c < C; c++) {
            a[c] += part[(size_t)t * 2 * C + c];
            b[c] += part[(size_t)t * 2 * C + C + c];
        }
}

/* ---------------------------------------------------------------- entry points */

/* stats (5*C floats, out): mean, invstd, unbiased variance, scale = weight*invstd,
 * shift = bias - mean*scale. y = relu(x*scale + shift [+ res]). Returns 0, or -1 when out
 * of memory (nothing written to y). */
int ltb_bn_relu_forward(const float *x, const float *res, long M, long C, const float *weight,
                        const float *bias, double eps, float *y, float *stats)
{
    int threads = omp_get_max_threads();
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    double *sum = malloc(sizeof(double) * 2 * C);
    if (!part || !sum) { free(part); free(sum); return -1; }
    double *sumsq = sum + C;
    const float *ref = x;  /* the first row: a shift close to the mean */

    #pragma omp parallel num_threads(threads)
    {
        long lo, hi;
        thread_rows(M, &lo, &hi);
        double *ps = part + (size_t)omp_get_thread_num() * 2 * C, *pq = ps + C;
        FOR_BLOCK(C, c0, cb, sums_block(x, lo, hi, C, c0, cb, ref + c0, ps + c0, pq + c0))
    }
    reduce_in_order(part, threads, C, sum, sumsq);
    free(part);

    float *mean = stats, *invstd = stats + C, *var_unbiased = stats + 2 * C;
    float *scale = stats + 3 * C, *shift = stats + 4 * C;
    for (long c = 0; c < C; c++) {
        double m = sum[c] / M;
        double var = sumsq[c] / M - m * m;
        if (var < 0) var = 0;
        double is = 1.0 / sqrt(var + eps);
        double mu = m + ref[c];
        mean[c] = (float)mu;
        invstd[c] = (float)is;
        var_unbiased[c] = (float)(M > 1 ? var * M / (M - 1) : var);
        scale[c] = (float)(weight[c] * is);
        shift[c] = (float)(bias[c] - mu * weight[c] * is);
    }
    free(sum);

    #pragma omp parallel
    {
        long lo, hi;
        thread_rows(M, &lo, &hi);
        FOR_BLOCK(C, c0, cb, normalise_block(x, res, y, lo, hi, C, c0, cb, scale + c0, shift + c0))
    }
    return 0;
}

/* Gradients of y = relu(batch_norm(x) [+ res]) given dy. stats: the forward's. y and dz
 * are given only with a residual (dz, out: the residual's gradient). grads (2*C, out):
 * d weight, d bias. Returns 0, or -1 when out of memory. */
int ltb_bn_relu_backward(const float *dy, const float *x, const float *y, long M, long C,
                         const float *weight, const float *stats, float *dz, float *dx,
                         float *grads)
{
    int threads = omp_get_max_threads();
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    double *sdz = malloc(sizeof(double) * 2 * C);
    float *coef = malloc(sizeof(float) * 3 * C);
    if (!part || !sdz || !coef) { free(part); free(sdz); free(coef); return -1; }
    double *sdzx = sdz + C;
    const float *mean = stats, *invstd = stats + C, *scale = stats + 3 * C, *shift = stats + 4 * C;

    #pragma omp parallel num_threads(threads)
    {
        long lo, hi;
        thread_rows(M, &lo, &hi);
        double *ps = part + (size_t)omp_get_thread_num() * 2 * C, *pq = ps + C;
        FOR_BLOCK(C, c0, cb, grad_sums_block(dy, x, y, dz, lo, hi, C, c0, cb, scale + c0, shift + c0,
                                             mean + c0, ps + c0, pq + c0))
    }
    reduce_in_order(part, threads, C, sdz, sdzx);
    free(part);

    /* dx = w*invstd * (dz - mean(dz) - (x - mean) * invstd^2 * mean(dz * (x - mean)))
     *    = k*dz + a*x + b */
    float *k = coef, *a = coef + C, *b = coef + 2 * C;
    for (long c = 0; c < C; c++) {
        double is = invstd[c], kc = weight[c] * is;
        double ac = -kc * is * is * sdzx[c] / M;
        k[c] = (float)kc;
        a[c] = (float)ac;
        b[c] = (float)(-kc * sdz[c] / M - ac * mean[c]);
        grads[c] = (float)(sdzx[c] * is);
        grads[C + c] = (float)sdz[c];
    }
    free(sdz);

    #pragma omp parallel
    {
        long lo, hi;
        thread_rows(M, &lo, &hi);
        FOR_BLOCK(C, c0, cb, grad_input_block(dy, x, dz, dx, lo, hi, C, c0, cb, scale + c0, shift + c0,
                                              k + c0, a + c0, b + c0))
    }
    free(coef);
    return 0;
}

// Instance norm (GroupNorm with one channel per group, affine) + ReLU + 2x2 average pooling (stride 2,
// floor), fused into one pass forward and two passes backward, for NCHW and channels_last tensors.
// The eager composition reads and writes the activation three times each way; this reads it once
// forward (after the statistics) and twice backward, and never stores the normalized activation.
//
// Forward:  z = (x - mean) * rstd * w + b;  y = avgpool2x2(relu(z))
// Backward: gz = relu'(z) * gy / 4 at each pooled position (0 where the floor drops a row or column);
//           gw = sum gz * xhat, gb = sum gz;  gx = rstd * w * (gz - mean(gz) - xhat * mean(gz * xhat))
//
// The element loops run in the input's type and are vectorized (`omp simd`); the statistics and the
// gradient sums are accumulated in double: per plane through vectorized reductions (NCHW), per image
// and channel from partial sums over one row (channels_last).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

// z = x * a + shift, the normalization and the affine of one channel in one multiply-add
template <typename T>
struct Affine {
  T a, shift;
  Affine(double w, double b, double mean, double rstd) : a(T(w * rstd)), shift(T(b - mean * w * rstd)) {}
};

// the input gradient as gx = A * gz + B * (x - mean) + D, from the sums of gz and gz * (x - mean)
template <typename T>
struct InputGrad {
  T A, B, D;
  InputGrad(double w, double rstd, double sum_g, double sum_gxc, int64_t count)
      : A(T(w * rstd)), B(T(-w * rstd * rstd * rstd * sum_gxc / count)), D(T(-w * rstd * sum_g / count)) {}
};

template <typename T>
inline T relu(T v) { return v > T(0) ? v : T(0); }

// NCHW: one (n, c) plane at a time, in parallel over planes.
template <typename T>
void forward_nchw(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t N, int64_t C, int64_t H,
                  int64_t W, double eps) {
  const int64_t HW = H * W, Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* __restrict__ xp = x + p * HW;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < HW; ++i) s += xp[i];
      const double m = s / HW;
      double v = 0;
#pragma omp simd reduction(+ : v)
      for (int64_t i = 0; i < HW; ++i) { const double d = double(xp[i]) - m; v += d * d; }
      const double r = 1.0 / std::sqrt(v / HW + eps);
      mean[p] = T(m);
      rstd[p] = T(r);
      const int64_t c = p % C;
      const Affine<T> f(w[c], b[c], m, r);
      T* __restrict__ yp = y + p * Ho * Wo;
      for (int64_t i = 0; i < Ho; ++i) {
        const T* __restrict__ r0 = xp + 2 * i * W;
        const T* __restrict__ r1 = r0 + W;
        T* __restrict__ out = yp + i * Wo;
#pragma omp simd
        for (int64_t j = 0; j < Wo; ++j) {
          const int64_t k = 2 * j;
          out[j] = T(0.25) * (relu(r0[k] * f.a + f.shift) + relu(r0[k + 1] * f.a + f.shift) +
                              relu(r1[k] * f.a + f.shift) + relu(r1[k + 1] * f.a + f.shift));
        }
      }
    }
  });
}

template <typename T>
void backward_nchw(const T* gy, const T* x, const T* w, const T* b, const T* mean, const T* rstd, T* gx, T* gw_part,
                   T* gb_part, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t HW = H * W, Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* __restrict__ xp = x + p * HW;
      const T* __restrict__ gp = gy + p * Ho * Wo;
      T* __restrict__ gxp = gx + p * HW;
      const int64_t c = p % C;
      const double m = mean[p], r = rstd[p];
      const Affine<T> f(w[c], b[c], m, r);
      const T mt = T(m);
      // gz into gx (as scratch), and its sums: gz and gz * (x - mean)
      double sg = 0, sgx = 0;
      for (int64_t h = 0; h < 2 * Ho; ++h) {
        const T* __restrict__ xr = xp + h * W;
        const T* __restrict__ gr = gp + (h / 2) * Wo;
        T* __restrict__ out = gxp + h * W;
        T rs = 0, rsx = 0;
#pragma omp simd reduction(+ : rs, rsx)
        for (int64_t j = 0; j < Wo; ++j) {
          const T x0 = xr[2 * j], x1 = xr[2 * j + 1], q = T(0.25) * gr[j];
          const T g0 = x0 * f.a + f.shift > T(0) ? q : T(0);
          const T g1 = x1 * f.a + f.shift > T(0) ? q : T(0);
          out[2 * j] = g0;
          out[2 * j + 1] = g1;
          rs += g0 + g1;
          rsx += g0 * (x0 - mt) + g1 * (x1 - mt);
        }
        if (W > 2 * Wo) out[W - 1] = T(0);
        sg += rs;
        sgx += rsx;
      }
      for (int64_t i = 2 * Ho * W; i < HW; ++i) gxp[i] = T(0);  // the row the floor dropped
      gw_part[p] = T(sgx * r);
      gb_part[p] = T(sg);
      const InputGrad<T> k(w[c], r, sg, sgx, HW);
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) gxp[i] = k.A * gxp[i] + k.B * (xp[i] - mt) + k.D;
    }
  });
}

// one channels_last pixel's gz (into gi) and its terms of the row sums; a function of its own so that
// the compiler sees the restrict-qualified arrays (as a lambda's locals they were versioned to a scalar
// loop with a branch per element on AVX2)
template <typename T>
inline void pixel_grad(const T* __restrict__ xi, const T* __restrict__ go, const T* __restrict__ a,
                       const T* __restrict__ sh, const T* __restrict__ mt, T* __restrict__ gi, T* __restrict__ rg,
                       T* __restrict__ rgx, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const T xv = xi[c];
    const T g = T(xv * a[c] + sh[c] > T(0)) * (T(0.25) * go[c]);  // a mask, not a branch
    gi[c] = g;
    rg[c] += g;
    rgx[c] += g * (xv - mt[c]);
  }
}

// channels_last (NHWC): one image at a time, in parallel over images; channels are the inner loop.
template <typename T>
void forward_nhwc(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t N, int64_t C, int64_t H,
                  int64_t W, double eps) {
  const int64_t HW = H * W, Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> s_(C), v_(C);
    std::vector<T> a_(C), sh_(C), mt_(C), rs_(C);
    double* __restrict__ s = s_.data();
    double* __restrict__ v = v_.data();
    T* __restrict__ a = a_.data();
    T* __restrict__ sh = sh_.data();
    T* __restrict__ mt = mt_.data();
    T* __restrict__ rs = rs_.data();
    for (int64_t n = begin; n < end; ++n) {
      const T* __restrict__ xn = x + n * HW * C;
      std::fill(s, s + C, 0.0);
      std::fill(v, v + C, 0.0);
      for (int64_t h = 0; h < H; ++h) {  // row sums in T, added to the double totals once per row
        std::fill(rs, rs + C, T(0));
        for (int64_t q = 0; q < W; ++q) {
          const T* __restrict__ xi = xn + (h * W + q) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) rs[c] += xi[c];
        }
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) s[c] += rs[c];
      }
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) { s[c] /= HW; mt[c] = T(s[c]); }
      for (int64_t h = 0; h < H; ++h) {
        std::fill(rs, rs + C, T(0));
        for (int64_t q = 0; q < W; ++q) {
          const T* __restrict__ xi = xn + (h * W + q) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) { const T d = xi[c] - mt[c]; rs[c] += d * d; }
        }
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) v[c] += rs[c];
      }
      for (int64_t c = 0; c < C; ++c) {
        const double r = 1.0 / std::sqrt(v[c] / HW + eps);
        mean[n * C + c] = T(s[c]);
        rstd[n * C + c] = T(r);
        const Affine<T> f(w[c], b[c], s[c], r);
        a[c] = f.a;
        sh[c] = f.shift;
      }
      T* __restrict__ yn = y + n * Ho * Wo * C;
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          const T* __restrict__ p00 = xn + ((2 * i) * W + 2 * j) * C;
          const T* __restrict__ p01 = p00 + C;
          const T* __restrict__ p10 = p00 + W * C;
          const T* __restrict__ p11 = p10 + C;
          T* __restrict__ out = yn + (i * Wo + j) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            out[c] = T(0.25) * (relu(p00[c] * a[c] + sh[c]) + relu(p01[c] * a[c] + sh[c]) +
                                relu(p10[c] * a[c] + sh[c]) + relu(p11[c] * a[c] + sh[c]));
        }
      }
    }
  });
}

template <typename T>
void backward_nhwc(const T* gy, const T* x, const T* w, const T* b, const T* mean, const T* rstd, T* gx, T* gw_part,
                   T* gb_part, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t HW = H * W, Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> sg_(C), sgx_(C);
    std::vector<T> a_(C), sh_(C), mt_(C), rg_(C), rgx_(C), kA_(C), kB_(C), kD_(C);
    double* __restrict__ sg = sg_.data();
    double* __restrict__ sgx = sgx_.data();
    T* __restrict__ a = a_.data();
    T* __restrict__ sh = sh_.data();
    T* __restrict__ mt = mt_.data();
    T* __restrict__ rg = rg_.data();
    T* __restrict__ rgx = rgx_.data();
    T* __restrict__ kA = kA_.data();
    T* __restrict__ kB = kB_.data();
    T* __restrict__ kD = kD_.data();
    for (int64_t n = begin; n < end; ++n) {
      const T* __restrict__ xn = x + n * HW * C;
      const T* __restrict__ gn = gy + n * Ho * Wo * C;
      T* __restrict__ gxn = gx + n * HW * C;
      const T* mn = mean + n * C;
      const T* rn = rstd + n * C;
      std::fill(sg, sg + C, 0.0);
      std::fill(sgx, sgx + C, 0.0);
      for (int64_t c = 0; c < C; ++c) {
        const Affine<T> f(w[c], b[c], mn[c], rn[c]);
        a[c] = f.a;
        sh[c] = f.shift;
        mt[c] = mn[c];
      }
      // gz into gx (as scratch), and its sums: gz and gz * (x - mean), in T over a row, then in double
      for (int64_t h = 0; h < 2 * Ho; ++h) {
        std::fill(rg, rg + C, T(0));
        std::fill(rgx, rgx + C, T(0));
        for (int64_t q = 0; q < 2 * Wo; ++q) {
          const T* __restrict__ xi = xn + (h * W + q) * C;
          T* __restrict__ gi = gxn + (h * W + q) * C;
          const T* __restrict__ go = gn + ((h / 2) * Wo + q / 2) * C;
          pixel_grad(xi, go, a, sh, mt, gi, rg, rgx, C);
        }
        if (W > 2 * Wo) std::fill(gxn + (h * W + W - 1) * C, gxn + (h * W + W) * C, T(0));
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) { sg[c] += rg[c]; sgx[c] += rgx[c]; }
      }
      if (H > 2 * Ho) std::fill(gxn + (H - 1) * W * C, gxn + HW * C, T(0));  // the row the floor dropped
      for (int64_t c = 0; c < C; ++c) {
        const double r = rn[c];
        gw_part[n * C + c] = T(sgx[c] * r);
        gb_part[n * C + c] = T(sg[c]);
        const InputGrad<T> k(w[c], r, sg[c], sgx[c], HW);
        kA[c] = k.A;
        kB[c] = k.B;
        kD[c] = k.D;
      }
      for (int64_t i = 0; i < HW; ++i) {
        const T* __restrict__ xi = xn + i * C;
        T* __restrict__ gi = gxn + i * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) gi[c] = kA[c] * gi[c] + kB[c] * (xi[c] - mt[c]) + kD[c];
      }
    }
  });
}

bool is_nhwc(const torch::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

void check(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "in_relu_pool: x must be a 4-d CPU tensor");
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "in_relu_pool: x must be contiguous (NCHW or channels_last)");
  TORCH_CHECK(w.numel() == x.size(1) && b.numel() == x.size(1), "in_relu_pool: weight and bias need C elements");
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, "in_relu_pool: H and W must be >= 2");
}

}  // namespace

std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor w, torch::Tensor b, double eps) {
  check(x, w, b);
  w = w.contiguous().to(x.scalar_type());
  b = b.contiguous().to(x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool nhwc = is_nhwc(x);
  auto y = torch::empty({N, C, H / 2, W / 2},
                        x.options().memory_format(nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  auto mean = torch::empty({N, C}, x.options());
  auto rstd = torch::empty({N, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "in_relu_pool_forward", [&] {
    auto f = nhwc ? forward_nhwc<scalar_t> : forward_nchw<scalar_t>;
    f(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
      mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), N, C, H, W, eps);
  });
  return {y, mean, rstd};
}

std::vector<torch::Tensor> backward(torch::Tensor gy, torch::Tensor x, torch::Tensor w, torch::Tensor b,
                                    torch::Tensor mean, torch::Tensor rstd) {
  check(x, w, b);
  const bool nhwc = is_nhwc(x);
  gy = gy.contiguous(nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous).to(x.scalar_type());
  w = w.contiguous().to(x.scalar_type());
  b = b.contiguous().to(x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto gx = torch::empty_like(x);
  auto gw = torch::empty({N, C}, x.options());
  auto gb = torch::empty({N, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "in_relu_pool_backward", [&] {
    auto f = nhwc ? backward_nhwc<scalar_t> : backward_nchw<scalar_t>;
    f(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
      mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(),
      gb.data_ptr<scalar_t>(), N, C, H, W);
  });
  return {gx, gw.sum(0), gb.sum(0)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "instance norm + ReLU + 2x2 average pooling, forward");
  m.def("backward", &backward, "instance norm + ReLU + 2x2 average pooling, backward");
}

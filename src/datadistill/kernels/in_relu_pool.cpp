// Instance norm (GroupNorm with one channel per group, affine) + ReLU + 2x2 average pooling (stride 2,
// floor), fused into one pass forward and two passes backward, for NCHW and channels_last tensors.
// The eager composition reads and writes the activation three times each way; this reads it once
// forward (after the statistics) and twice backward, and never stores the normalized activation.
//
// Forward:  z = (x - mean) * rstd * w + b;  y = avgpool2x2(relu(z))
// Backward: gz = relu'(z) * gy / 4 at each pooled position (0 where the floor drops a row or column);
//           gw = sum gz * xhat, gb = sum gz;  gx = rstd * w * (gz - mean(gz) - xhat * mean(gz * xhat))
// Statistics are accumulated in double whatever the input's type (float or double).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

template <typename T>
inline T relu(T v) { return v > T(0) ? v : T(0); }

// NCHW: one (n, c) plane at a time, in parallel over planes.
template <typename T>
void forward_nchw(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t N, int64_t C, int64_t H,
                  int64_t W, double eps) {
  const int64_t HW = H * W, Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* xp = x + p * HW;
      double s = 0;
      for (int64_t i = 0; i < HW; ++i) s += xp[i];
      const double m = s / HW;
      double v = 0;
      for (int64_t i = 0; i < HW; ++i) { const double d = xp[i] - m; v += d * d; }
      const double r = 1.0 / std::sqrt(v / HW + eps);
      mean[p] = T(m);
      rstd[p] = T(r);
      const int64_t c = p % C;
      const T a = T(double(w[c]) * r), sh = T(double(b[c]) - m * double(w[c]) * r);
      T* yp = y + p * Ho * Wo;
      for (int64_t i = 0; i < Ho; ++i) {
        const T* r0 = xp + 2 * i * W;
        const T* r1 = r0 + W;
        for (int64_t j = 0; j < Wo; ++j) {
          const int64_t k = 2 * j;
          yp[i * Wo + j] = T(0.25) * (relu(r0[k] * a + sh) + relu(r0[k + 1] * a + sh) + relu(r1[k] * a + sh) +
                                      relu(r1[k + 1] * a + sh));
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
      const T* xp = x + p * HW;
      const T* gp = gy + p * Ho * Wo;
      T* gxp = gx + p * HW;
      const int64_t c = p % C;
      const double m = mean[p], r = rstd[p];
      const T a = T(double(w[c]) * r), sh = T(double(b[c]) - m * double(w[c]) * r);
      // gz into gx (as scratch), and its two sums
      double sg = 0, sgx = 0;
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t q = 0; q < W; ++q) {
          const int64_t idx = h * W + q;
          T g = T(0);
          if (h < 2 * Ho && q < 2 * Wo && xp[idx] * a + sh > T(0)) g = T(0.25) * gp[(h / 2) * Wo + q / 2];
          gxp[idx] = g;
          sg += g;
          sgx += double(g) * (double(xp[idx]) - m) * r;
        }
      }
      gw_part[p] = T(sgx);
      gb_part[p] = T(sg);
      const double k = r * double(w[c]);
      const double mg = sg / HW, mgx = sgx / HW;
      for (int64_t i = 0; i < HW; ++i) {
        const double xhat = (double(xp[i]) - m) * r;
        gxp[i] = T(k * (double(gxp[i]) - mg - xhat * mgx));
      }
    }
  });
}

// channels_last (NHWC): one image at a time, in parallel over images; channels are the inner loop.
template <typename T>
void forward_nhwc(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t N, int64_t C, int64_t H,
                  int64_t W, double eps) {
  const int64_t HW = H * W, Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> s(C), v(C);
    std::vector<T> a(C), sh(C);
    for (int64_t n = begin; n < end; ++n) {
      const T* xn = x + n * HW * C;
      std::fill(s.begin(), s.end(), 0.0);
      std::fill(v.begin(), v.end(), 0.0);
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < C; ++c) s[c] += xn[i * C + c];
      for (int64_t c = 0; c < C; ++c) s[c] /= HW;
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < C; ++c) { const double d = xn[i * C + c] - s[c]; v[c] += d * d; }
      for (int64_t c = 0; c < C; ++c) {
        const double r = 1.0 / std::sqrt(v[c] / HW + eps);
        mean[n * C + c] = T(s[c]);
        rstd[n * C + c] = T(r);
        a[c] = T(double(w[c]) * r);
        sh[c] = T(double(b[c]) - s[c] * double(w[c]) * r);
      }
      T* yn = y + n * Ho * Wo * C;
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          const T* p00 = xn + ((2 * i) * W + 2 * j) * C;
          const T* p01 = p00 + C;
          const T* p10 = p00 + W * C;
          const T* p11 = p10 + C;
          T* out = yn + (i * Wo + j) * C;
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
    std::vector<double> sg(C), sgx(C);
    std::vector<T> a(C), sh(C);
    for (int64_t n = begin; n < end; ++n) {
      const T* xn = x + n * HW * C;
      const T* gn = gy + n * Ho * Wo * C;
      T* gxn = gx + n * HW * C;
      const T* mn = mean + n * C;
      const T* rn = rstd + n * C;
      std::fill(sg.begin(), sg.end(), 0.0);
      std::fill(sgx.begin(), sgx.end(), 0.0);
      for (int64_t c = 0; c < C; ++c) {
        a[c] = T(double(w[c]) * double(rn[c]));
        sh[c] = T(double(b[c]) - double(mn[c]) * double(w[c]) * double(rn[c]));
      }
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t q = 0; q < W; ++q) {
          const T* xi = xn + (h * W + q) * C;
          T* gi = gxn + (h * W + q) * C;
          if (h >= 2 * Ho || q >= 2 * Wo) {
            for (int64_t c = 0; c < C; ++c) gi[c] = T(0);
            continue;
          }
          const T* go = gn + ((h / 2) * Wo + q / 2) * C;
          for (int64_t c = 0; c < C; ++c) {
            const T g = xi[c] * a[c] + sh[c] > T(0) ? T(0.25) * go[c] : T(0);
            gi[c] = g;
            sg[c] += g;
            sgx[c] += double(g) * (double(xi[c]) - double(mn[c])) * double(rn[c]);
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        gw_part[n * C + c] = T(sgx[c]);
        gb_part[n * C + c] = T(sg[c]);
      }
      for (int64_t i = 0; i < HW; ++i) {
        const T* xi = xn + i * C;
        T* gi = gxn + i * C;
        for (int64_t c = 0; c < C; ++c) {
          const double r = rn[c];
          const double xhat = (double(xi[c]) - double(mn[c])) * r;
          gi[c] = T(r * double(w[c]) * (double(gi[c]) - sg[c] / HW - xhat * sgx[c] / HW));
        }
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

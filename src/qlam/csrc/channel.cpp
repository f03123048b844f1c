// The mixed memory's channel recurrence (qlam/sim/scan/channel.py), forward and backward.
//
//   r_t = decay ⊙ (d_t d_t^†) ⊙ r_{t-1} + w_t w_t^†        (per head h and example b, N x N)
//
// d, w: (H, B, L, N) complex; decay: (H, N, N) real; r0: (H, B, N, N) complex.
// forward returns every r_t, (H, B, L, N, N) complex (the readout is a GEMM over them).
// backward takes dLoss/dr_t for every t (PyTorch's conjugate-Wirtinger convention) and
// returns the gradients of d, w, decay and r0. Complex numbers are interleaved (re, im)
// pairs and multiplied by hand (std::complex would call the slow NaN-checking helpers).
// OpenMP over (head, example) pairs; decay's gradient is reduced over per-thread buffers.
#include <torch/extension.h>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Per (head, example): the token's d, w split into real and imaginary parts, and the table
// e_jk = d_j conj(d_k) (lambda = decay e), so the N^2 loops below are plain and vectorise.
template <typename T>
struct Token {
  std::vector<T> dr, di, wr, wi, er, ei;
  explicit Token(int64_t N) : dr(N), di(N), wr(N), wi(N), er(N * N), ei(N * N) {}
  void load(const T* d, const T* w, int64_t N) {
    for (int64_t j = 0; j < N; ++j) {
      dr[j] = d[2 * j]; di[j] = d[2 * j + 1]; wr[j] = w[2 * j]; wi[j] = w[2 * j + 1];
    }
    for (int64_t j = 0; j < N; ++j) {
#pragma omp simd
      for (int64_t k = 0; k < N; ++k) {
        er[j * N + k] = dr[j] * dr[k] + di[j] * di[k];
        ei[j * N + k] = di[j] * dr[k] - dr[j] * di[k];
      }
    }
  }
};

template <typename T>
void forward_impl(const T* d, const T* w, const T* decay, const T* r0, T* out,
                  int64_t L, int64_t H, int64_t B, int64_t N) {
  const int64_t NN = N * N;
#pragma omp parallel
  {
    std::vector<T> rr(NN), ri(NN);
    Token<T> tok(N);
#pragma omp for schedule(static)
    for (int64_t hb = 0; hb < H * B; ++hb) {
      const T* dec = decay + (hb / B) * NN;
      for (int64_t m = 0; m < NN; ++m) { rr[m] = r0[2 * (hb * NN + m)]; ri[m] = r0[2 * (hb * NN + m) + 1]; }
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = hb * L + t;
        tok.load(d + 2 * row * N, w + 2 * row * N, N);
        T* o = out + 2 * row * NN;
        for (int64_t j = 0; j < N; ++j) {
#pragma omp simd
          for (int64_t k = 0; k < N; ++k) {
            const int64_t m = j * N + k;
            const T lr = dec[m] * tok.er[m], li = dec[m] * tok.ei[m];
            const T nr = lr * rr[m] - li * ri[m] + (tok.wr[j] * tok.wr[k] + tok.wi[j] * tok.wi[k]);
            const T ni = lr * ri[m] + li * rr[m] + (tok.wi[j] * tok.wr[k] - tok.wr[j] * tok.wi[k]);
            rr[m] = nr; ri[m] = ni; o[2 * m] = nr; o[2 * m + 1] = ni;
          }
        }
      }
    }
  }
}

template <typename T>
void backward_impl(const T* grad, const T* d, const T* w, const T* decay, const T* r0,
                   const T* rs, T* gd, T* gw, T* gdecay, T* gr0,
                   int64_t L, int64_t H, int64_t B, int64_t N) {
  const int64_t NN = N * N;
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  std::vector<T> gdec_all(static_cast<size_t>(nthreads) * H * NN, T(0));
#pragma omp parallel
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    std::vector<T> gr(NN), gi(NN), pr(NN), pi(NN), qr(NN), qi(NN);
    Token<T> tok(N);
#pragma omp for schedule(static)
    for (int64_t hb = 0; hb < H * B; ++hb) {
      const int64_t h = hb / B;
      const T* dec = decay + h * NN;
      T* gdec = gdec_all.data() + (static_cast<int64_t>(tid) * H + h) * NN;
      std::fill(gr.begin(), gr.end(), T(0));
      std::fill(gi.begin(), gi.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = hb * L + t;
        tok.load(d + 2 * row * N, w + 2 * row * N, N);
        const T* gt = grad + 2 * row * NN;
        const T* rp = t > 0 ? rs + 2 * (row - 1) * NN : r0 + 2 * hb * NN;
        // G = dLoss/dr_t (carried + direct); P = decay r_prev; Q = G conj(P)
#pragma omp simd
        for (int64_t m = 0; m < NN; ++m) {
          gr[m] += gt[2 * m];
          gi[m] += gt[2 * m + 1];
          pr[m] = dec[m] * rp[2 * m];
          pi[m] = dec[m] * rp[2 * m + 1];
          qr[m] = gr[m] * pr[m] + gi[m] * pi[m];
          qi[m] = gi[m] * pr[m] - gr[m] * pi[m];
        }
        // gw = (G + G^dagger) w ; gd = (Q + Q^dagger) d
        T* gdt = gd + 2 * row * N;
        T* gwt = gw + 2 * row * N;
        for (int64_t j = 0; j < N; ++j) {
          T awr = 0, awi = 0, adr = 0, adi = 0;
          for (int64_t k = 0; k < N; ++k) {
            const int64_t jk = j * N + k, kj = k * N + j;
            awr += gr[jk] * tok.wr[k] - gi[jk] * tok.wi[k] + gr[kj] * tok.wr[k] + gi[kj] * tok.wi[k];
            awi += gr[jk] * tok.wi[k] + gi[jk] * tok.wr[k] + gr[kj] * tok.wi[k] - gi[kj] * tok.wr[k];
            adr += qr[jk] * tok.dr[k] - qi[jk] * tok.di[k] + qr[kj] * tok.dr[k] + qi[kj] * tok.di[k];
            adi += qr[jk] * tok.di[k] + qi[jk] * tok.dr[k] + qr[kj] * tok.di[k] - qi[kj] * tok.dr[k];
          }
          gwt[2 * j] = awr; gwt[2 * j + 1] = awi; gdt[2 * j] = adr; gdt[2 * j + 1] = adi;
        }
        // decay's gradient Re(conj(G) e r_prev), and the carry G <- conj(decay e) G
#pragma omp simd
        for (int64_t m = 0; m < NN; ++m) {
          const T er = tok.er[m], ei = tok.ei[m];
          const T xr = er * rp[2 * m] - ei * rp[2 * m + 1], xi = er * rp[2 * m + 1] + ei * rp[2 * m];
          gdec[m] += gr[m] * xr + gi[m] * xi;
          const T lr = dec[m] * er, li = dec[m] * ei;
          const T nr = lr * gr[m] + li * gi[m], ni = lr * gi[m] - li * gr[m];
          gr[m] = nr; gi[m] = ni;
        }
      }
      for (int64_t m = 0; m < NN; ++m) { gr0[2 * (hb * NN + m)] = gr[m]; gr0[2 * (hb * NN + m) + 1] = gi[m]; }
    }
  }
  for (int64_t i = 0; i < H * NN; ++i) {
    T s = T(0);
    for (int th = 0; th < nthreads; ++th) s += gdec_all[static_cast<size_t>(th) * H * NN + i];
    gdecay[i] = s;
  }
}

void check(const torch::Tensor& d, const torch::Tensor& w, const torch::Tensor& decay,
           const torch::Tensor& r0) {
  TORCH_CHECK(d.device().is_cpu(), "channel kernel: CPU tensors only");
  TORCH_CHECK(d.is_complex() && d.is_contiguous() && d.dim() == 4, "d: contiguous complex (H,B,L,N)");
  TORCH_CHECK(w.sizes() == d.sizes() && w.scalar_type() == d.scalar_type() && w.is_contiguous(),
              "w must match d");
  const auto N = d.size(3);
  TORCH_CHECK(decay.dim() == 3 && decay.size(0) == d.size(0) && decay.size(1) == N &&
              decay.size(2) == N && decay.is_contiguous() &&
              decay.scalar_type() == c10::toRealValueType(d.scalar_type()),
              "decay: contiguous real (H,N,N) of d's precision");
  TORCH_CHECK(r0.dim() == 4 && r0.size(0) == d.size(0) && r0.size(1) == d.size(1) &&
              r0.size(2) == N && r0.size(3) == N && r0.is_contiguous() &&
              r0.scalar_type() == d.scalar_type(), "r0: contiguous complex (H,B,N,N)");
}

}  // namespace

torch::Tensor channel_forward(torch::Tensor d, torch::Tensor w, torch::Tensor decay,
                              torch::Tensor r0) {
  check(d, w, decay, r0);
  const auto H = d.size(0), B = d.size(1), L = d.size(2), N = d.size(3);
  auto out = torch::empty({H, B, L, N, N}, d.options());
  AT_DISPATCH_FLOATING_TYPES(decay.scalar_type(), "channel_forward", [&] {
    forward_impl<scalar_t>(reinterpret_cast<const scalar_t*>(d.data_ptr()),
                           reinterpret_cast<const scalar_t*>(w.data_ptr()),
                           decay.data_ptr<scalar_t>(),
                           reinterpret_cast<const scalar_t*>(r0.data_ptr()),
                           reinterpret_cast<scalar_t*>(out.data_ptr()), L, H, B, N);
  });
  return out;
}

std::vector<torch::Tensor> channel_backward(torch::Tensor grad, torch::Tensor d, torch::Tensor w,
                                            torch::Tensor decay, torch::Tensor r0,
                                            torch::Tensor rs) {
  check(d, w, decay, r0);
  TORCH_CHECK(grad.sizes() == rs.sizes() && grad.is_contiguous() && rs.is_contiguous() &&
              grad.scalar_type() == d.scalar_type(), "grad and rs: contiguous (H,B,L,N,N)");
  const auto H = d.size(0), B = d.size(1), L = d.size(2), N = d.size(3);
  auto gd = torch::empty_like(d), gw = torch::empty_like(w), gr0 = torch::empty_like(r0);
  auto gdecay = torch::empty_like(decay);
  AT_DISPATCH_FLOATING_TYPES(decay.scalar_type(), "channel_backward", [&] {
    backward_impl<scalar_t>(reinterpret_cast<const scalar_t*>(grad.data_ptr()),
                            reinterpret_cast<const scalar_t*>(d.data_ptr()),
                            reinterpret_cast<const scalar_t*>(w.data_ptr()),
                            decay.data_ptr<scalar_t>(),
                            reinterpret_cast<const scalar_t*>(r0.data_ptr()),
                            reinterpret_cast<const scalar_t*>(rs.data_ptr()),
                            reinterpret_cast<scalar_t*>(gd.data_ptr()),
                            reinterpret_cast<scalar_t*>(gw.data_ptr()), gdecay.data_ptr<scalar_t>(),
                            reinterpret_cast<scalar_t*>(gr0.data_ptr()), L, H, B, N);
  });
  return {gd, gw, gdecay, gr0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("channel_forward", &channel_forward, "mixed-memory channel recurrence, forward");
  m.def("channel_backward", &channel_backward, "mixed-memory channel recurrence, backward");
}

// The quantum-memory recurrence (qlam.sim.recurrence) as a compiled CPU kernel.
//
// Contract (the same as the PyTorch path; N = 2^n, states as real pairs [Re psi | Im psi]):
//   per head h, token t, layer r:   psi <- W[h,r] (exp(i phases[b,t,h,r]) * psi)
//   readout:  probs[b,t,h,k] = |v_k|^2,  v = W_read[h] (exp(i read_phases[b,t,h]) * psi_t)
//             (or v = psi_t without a readout basis)
// with W given as (..., 2, N, N) [re, im]. Optionally (renorm_every > 0, as the PyTorch
// forward does) the state is rescaled to norm 1 after every renorm_every-th token, which the
// backward treats as the identity.
//
// Layout: a task is one head and a tile of Bt batch rows. Its states stay in cache while it
// walks all tokens; per token and layer the tile is rotated elementwise and multiplied by the
// (packed) matrix: a small GEMM done by a register-blocked micro-kernel. With rows as row
// vectors, y = x . C where C = W^T (forward) or conj(W) = W^-1 transposed back (backward). A
// complex product is either one real GEMM against the 2N x 2N real form [[P, Q], [-Q, P]]
// of C = P + iQ, or (when N is a multiple of the panel width) three N x N real GEMMs
// (x_r P, x_i Q, (x_r + x_i)(P + Q): 3/4 of the multiplications).
//
// Backward (reversible / adjoint): no stored history. Walking t = L-1..0 the state is rebuilt
// through the inverse (psi_{t-1} = rot^-1(W^dagger psi_t)) together with the adjoint; the
// gradient of every W is accumulated per thread (one rank-Bt update per token) and reduced at
// the end; the phase gradient is read off directly, dL/dphi_k = g_im u_re - g_re u_im for the
// rotated vector u and its adjoint g.
//
// cos/sin of the phases are computed in the loops (a vectorisable Cody-Waite reduction and
// minimax polynomials, about 1 ulp; rows with |phi| beyond a few thousand use libm), so no
// tables are stored. Parallelism: at::parallel_for over (head, batch tile) tasks.
// ISA: the hot code is compiled three times (baseline, AVX2+FMA, AVX-512) through target
// attributes and picked at run time from the CPU's features, so the build uses no -march flag
// and the library runs on any x86-64 (other architectures use the baseline build).

#include <torch/extension.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if !defined(__GNUC__)
#error "qlam recurrence kernel: needs GCC or Clang (vector extensions)"
#endif

#define QLAM_INLINE inline __attribute__((always_inline))

namespace {

// ------------------------------------------------------------------------------------------
// micro-kernel: C[MR x NR] (+)= sum_k A(i, k) * B(k, 0:NR)
//   A(i, k) = a[i * sai + k * sak],  B(k, j) = b[k * ldb + j],  C(i, j) = c[i * ldc + j]
// NR = NV vectors of VB bytes.
template <typename T, int VB, int MR, int NV>
QLAM_INLINE void micro(int64_t K, const T* __restrict a, int64_t sai, int64_t sak,
                       const T* __restrict b, int64_t ldb, T* __restrict c, int64_t ldc,
                       bool accumulate) {
  constexpr int W = VB / static_cast<int>(sizeof(T));
  typedef T vec __attribute__((vector_size(VB)));
  vec acc[MR][NV];
  if (accumulate) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) std::memcpy(&acc[i][v], c + i * ldc + v * W, VB);
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = vec{};
  }
  for (int64_t k = 0; k < K; ++k) {
    vec bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + k * ldb + v * W, VB);
    const T* ak = a + k * sak;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T s = ak[i * sai];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += s * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) std::memcpy(c + i * ldc + v * W, &acc[i][v], VB);
}

int64_t roundup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ------------------------------------------------------------------------------------------
// Per-call description shared by all tasks (raw pointers into contiguous tensors).
template <typename T>
struct Plan {
  int64_t B, L, H, R, N;  // batch, tokens, heads, layers per token, 2^n
  int64_t NR, MR;         // panel width and micro-kernel rows of the chosen ISA
  bool gauss;             // complex products as three real GEMMs (N % NR == 0)
  int64_t P;              // row width of state tiles: roundup(2N, NR)
  int64_t Pu;             // row width of U, read transposed by the outer products
  int64_t Ma, Na;         // rows / columns of one gradient accumulator block
  int64_t acc_size;       // accumulator elements per matrix (real form: Ma*Na; Gauss: 3*Ma*Na)
  int64_t pack_size;      // packed elements per matrix (real form: 2N*P; Gauss: 3*N*N)
  int64_t Bt, ntile;      // rows per task tile, tiles per head
  int64_t TB;             // tokens per staged block
  int64_t renorm = 0;     // forward: rescale the state to norm 1 every renorm tokens
  const T* phases = nullptr;       // (B, L, H, F): F = R N phases, or F angles (pmap)
  const T* read_phases = nullptr;  // (B, L, H, Fr) or null: Fr = N phases, or angles (rmap)
  // Phase maps (null: the phases are given): a row's phases are off + angles . map, with
  // pmap (F, R N) and poff (R N) for the layers, rmap (Fr, N) and roff (N) for the readout;
  // the backward returns the angles' gradients, g . map^T (pmap_t (R N, roundup(F, AB)) and
  // rmap_t (N, roundup(Fr, AB)): the maps transposed, zero-padded to blocks of AB angles)
  int64_t F = 0, Fr = 0;
  const T* pmap = nullptr;
  const T* poff = nullptr;
  const T* pmap_t = nullptr;
  const T* rmap = nullptr;
  const T* roff = nullptr;
  const T* rmap_t = nullptr;
  // packed matrices: wpack (H, R): C = W^T in the forward, conj(W) in the backward;
  // rpack (H): W_read^T; rbpack (H): conj(W_read) (backward only)
  const T* wpack = nullptr;
  const T* rpack = nullptr;
  const T* rbpack = nullptr;
  // state and adjoint tiles, (H, ntile, Bt, P)
  T* Z = nullptr;
  T* A = nullptr;
  // outputs / incoming gradients
  T* probs = nullptr;          // (B, L, H, N)
  const T* gprobs = nullptr;   // (B, L, H, N) or null
  T* gphase = nullptr;         // (B, L, H, F)
  T* grphase = nullptr;        // (B, L, H, Fr)
  T* gw = nullptr;             // per thread (nthr, H, R, acc_size)
  T* gwr = nullptr;            // per thread (nthr, H, acc_size)
  T* scratch = nullptr;        // per thread scratch_size elements
  int64_t scratch_size = 0;
};

// The layout of a call: micro-kernel rows MR and panel width NR of the ISA in use, the Gauss
// form where allowed and N is a multiple of NR, the padded row widths and the rows per task.
template <typename T>
Plan<T> plan_layout(int64_t B, int64_t L, int64_t H, int64_t R, int64_t N, int64_t MR,
                    int64_t NR, bool allow_gauss, int64_t nthr) {
  Plan<T> p;
  p.B = B;
  p.L = L;
  p.H = H;
  p.R = R;
  p.N = N;
  p.MR = MR;
  p.NR = NR;
  p.gauss = allow_gauss && N % p.NR == 0;
  p.P = roundup(2 * N, p.NR);
  if (p.gauss) {
    p.Ma = roundup(N, p.MR);
    p.Na = N;
    p.acc_size = 3 * p.Ma * p.Na;
    p.pack_size = 3 * N * N;
  } else {
    p.Ma = roundup(2 * N, p.MR);
    p.Na = p.P;
    p.acc_size = p.Ma * p.Na;
    p.pack_size = 2 * N * p.P;
  }
  p.Pu = std::max({p.P, roundup(2 * N, p.MR), N + roundup(N, p.MR)});
  // rows per task: about 32 (enough to amortise the gradient accumulators and to reuse the
  // matrices from cache), fewer when that would leave threads without work
  int64_t nblk = std::max<int64_t>(1, std::min((32 + p.MR - 1) / p.MR, (B + p.MR - 1) / p.MR));
  while (nblk > 1 && H * ((B + nblk * p.MR - 1) / (nblk * p.MR)) < 2 * nthr) --nblk;
  p.Bt = nblk * p.MR;
  p.ntile = (B + p.Bt - 1) / p.Bt;
  p.TB = 4;
  p.F = R * N;
  p.Fr = N;
  return p;
}

// ------------------------------------------------------------------------------------------
// cos and sin of a row of phases. x = k pi/2 + r with |r| <= pi/4 (three-part pi/2, exact
// products for the |x| allowed), then the fdlibm (double) / cephes (float) kernels; the
// quadrant is applied with integer bit masks, so the loop vectorises on any ISA without
// data-dependent branches (compare-and-select versions compiled to branches on the lane
// masks: twice the time on random phases).
template <typename T>
struct SinCosConst;
template <>
struct SinCosConst<float> {
  using bits = uint32_t;
  static constexpr float limit = 8192.f, magic = 12582912.f;  // 1.5 * 2^23
  static constexpr float p1 = 1.5703125f, p2 = 4.837512969970703125e-4f,
                         p3 = 7.54978995489188216e-8f;
  static QLAM_INLINE float sin_poly(float r, float z) {
    return r + r * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
  }
  static QLAM_INLINE float cos_poly(float z) {
    return 1.f - 0.5f * z +
           z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
  }
};
template <>
struct SinCosConst<double> {
  using bits = uint64_t;
  static constexpr double limit = 1e5, magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double p1 = 1.57079632673412561417e+00, p2 = 6.07710050630396597660e-11,
                          p3 = 2.02226624879595063154e-21;
  static QLAM_INLINE double sin_poly(double r, double z) {
    return r + r * z * (-1.66666666666666324348e-01 +
                        z * (8.33333333332248946124e-03 +
                             z * (-1.98412698298579493134e-04 +
                                  z * (2.75573137070700676789e-06 +
                                       z * (-2.50507602534068634195e-08 +
                                            z * 1.58969099521155010221e-10)))));
  }
  static QLAM_INLINE double cos_poly(double z) {
    return 1.0 - 0.5 * z +
           z * z * (4.16666666666666019037e-02 +
                    z * (-1.38888888888741095749e-03 +
                         z * (2.48015872894767294178e-05 +
                              z * (-2.75573143513906633035e-07 +
                                   z * (2.08757232129817482790e-09 +
                                        z * -1.13596475577881948265e-11)))));
  }
};

template <typename T>
QLAM_INLINE void sincos_row(const T* __restrict x, T* __restrict c, T* __restrict s,
                            int64_t N) {
  using K = SinCosConst<T>;
  int big = 0;
  for (int64_t k = 0; k < N; ++k) big |= static_cast<int>(std::abs(x[k]) > K::limit);
  if (big) {
    for (int64_t k = 0; k < N; ++k) {
      c[k] = std::cos(x[k]);
      s[k] = std::sin(x[k]);
    }
    return;
  }
  using U = typename K::bits;  // same width as T
  constexpr int sign_shift = 8 * sizeof(T) - 2;  // moves bit 1 to the sign bit
  const T two_over_pi = T(0.636619772367581343075535053490057448);
  for (int64_t k = 0; k < N; ++k) {
    const T v = x[k];
    const T f = v * two_over_pi + K::magic;  // the nearest integer q sits in f's low bits
    const T q = f - K::magic;
    const T r = ((v - q * K::p1) - q * K::p2) - q * K::p3;
    const T z = r * r;
    const T sr = K::sin_poly(r, z), cr = K::cos_poly(z);
    // quadrant q mod 4 by integer masks (no compares, so no data-dependent branches): odd q
    // swaps sin and cos; sin changes sign for q = 2, 3, cos for q = 1, 2 (mod 4)
    U j, sb, cb;
    std::memcpy(&j, &f, sizeof(T));
    std::memcpy(&sb, &sr, sizeof(T));
    std::memcpy(&cb, &cr, sizeof(T));
    const U odd = U(0) - (j & U(1));
    const U so = ((sb & ~odd) | (cb & odd)) ^ ((j & U(2)) << sign_shift);
    const U co = ((cb & ~odd) | (sb & odd)) ^ (((j + U(1)) & U(2)) << sign_shift);
    std::memcpy(s + k, &so, sizeof(T));
    std::memcpy(c + k, &co, sizeof(T));
  }
}

// z (rows of width P, [re | im] in the first 2N) -> out = z * exp(i phi)
template <typename T>
QLAM_INLINE void rotate_row(const T* __restrict z, const T* __restrict c, const T* __restrict s,
                            T* __restrict out, int64_t N) {
  for (int64_t k = 0; k < N; ++k) {
    const T xr = z[k], xi = z[N + k];
    out[k] = xr * c[k] - xi * s[k];
    out[N + k] = xi * c[k] + xr * s[k];
  }
}

// One row of the backward's step back through a rotation, in one pass: the phase gradient
// gph_k = Im(conj(u_k) g_k) = g_im u_re - g_re u_im, and the state and adjoint before the
// rotation, z = u exp(-i phi), a = g exp(-i phi) (rows [re | im] of width N). READOUT: the
// rotation of the measurement basis, which leaves the state as it is: z is not written and
// the adjoint is added to a (the state's adjoint from the later tokens).
template <typename T, bool READOUT = false>
QLAM_INLINE void unrotate_step(const T* __restrict u, const T* __restrict g,
                               const T* __restrict c, const T* __restrict s, T* __restrict z,
                               T* __restrict a, T* __restrict gph, int64_t N) {
  for (int64_t k = 0; k < N; ++k) {
    const T ur = u[k], ui = u[N + k], gr = g[k], gi = g[N + k], ck = c[k], sk = s[k];
    gph[k] = gi * ur - gr * ui;
    if constexpr (READOUT) {
      a[k] += gr * ck + gi * sk;
      a[N + k] += gi * ck - gr * sk;
    } else {
      z[k] = ur * ck + ui * sk;
      z[N + k] = ui * ck - ur * sk;
      a[k] = gr * ck + gi * sk;
      a[N + k] = gi * ck - gr * sk;
    }
  }
}

// Y = X . C for a tile of Bt rows ([re | im] rows, strides ldx / ldy; Y must not alias X).
// tmp: 2 * Bt * N scratch (Gauss form).
template <typename T, int VB, int MR, int NV>
QLAM_INLINE void cmul(const Plan<T>& p, const T* __restrict x, int64_t ldx,
                      const T* __restrict pk, T* __restrict y, int64_t ldy, T* __restrict tmp) {
  constexpr int64_t NR = NV * VB / static_cast<int64_t>(sizeof(T));
  const int64_t N = p.N, Bt = p.Bt;
  if (!p.gauss) {
    const int64_t K = 2 * N, npan = p.P / NR;
    for (int64_t q = 0; q < npan; ++q)
      for (int64_t r0 = 0; r0 < Bt; r0 += MR)
        micro<T, VB, MR, NV>(K, x + r0 * ldx, ldx, 1, pk + q * K * NR, NR,
                             y + r0 * ldy + q * NR, ldy, false);
    return;
  }
  T* s = tmp;            // x_r + x_i, Bt x N
  T* t3 = tmp + Bt * N;  // (x_r + x_i)(P + Q), Bt x N
  for (int64_t i = 0; i < Bt; ++i) {
    const T* xi = x + i * ldx;
    T* si = s + i * N;
    for (int64_t k = 0; k < N; ++k) si[k] = xi[k] + xi[N + k];
  }
  const T* pkP = pk;
  const T* pkQ = pk + N * N;
  const T* pkS = pk + 2 * N * N;
  const int64_t npan = N / NR;
  for (int64_t q = 0; q < npan; ++q) {
    const int64_t o = q * N * NR;
    for (int64_t r0 = 0; r0 < Bt; r0 += MR) {
      micro<T, VB, MR, NV>(N, x + r0 * ldx, ldx, 1, pkP + o, NR, y + r0 * ldy + q * NR, ldy,
                           false);
      micro<T, VB, MR, NV>(N, x + r0 * ldx + N, ldx, 1, pkQ + o, NR,
                           y + r0 * ldy + N + q * NR, ldy, false);
      micro<T, VB, MR, NV>(N, s + r0 * N, N, 1, pkS + o, NR, t3 + r0 * N + q * NR, N, false);
    }
  }
  for (int64_t i = 0; i < Bt; ++i) {
    T* yr = y + i * ldy;
    T* yi = yr + N;
    const T* t = t3 + i * N;
    for (int64_t k = 0; k < N; ++k) {
      const T a = yr[k], b = yi[k];
      yr[k] = a - b;
      yi[k] = t[k] - a - b;
    }
  }
}

// Gradient of C for Y = U . C given G = dL/dY, accumulated into acc:
//   dP += U_r^T G_r + U_i^T G_i,  dQ += U_r^T G_i - U_i^T G_r
// real form: acc (Ma x P) += U^T G over the 2N x 2N real form (reduced to dP, dQ at the end);
// Gauss form: three blocks (Ma x N) += U_r^T G_r, U_i^T G_i, (U_r - U_i)^T (G_r + G_i).
// U rows have stride Pu (columns read transposed up to Pu); tmp: Bt * (Ma + N) scratch.
template <typename T, int VB, int MR, int NV>
QLAM_INLINE void couter(const Plan<T>& p, const T* __restrict u, const T* __restrict g,
                        int64_t ldg, T* __restrict acc, T* __restrict tmp) {
  constexpr int64_t NR = NV * VB / static_cast<int64_t>(sizeof(T));
  const int64_t N = p.N, Bt = p.Bt, Pu = p.Pu, Ma = p.Ma;
  if (!p.gauss) {
    const int64_t P = p.P;
    for (int64_t i0 = 0; i0 < Ma; i0 += MR)
      for (int64_t q = 0; q < P / NR; ++q)
        micro<T, VB, MR, NV>(Bt, u + i0, 1, Pu, g + q * NR, ldg, acc + i0 * P + q * NR, P,
                             true);
    return;
  }
  T* d = tmp;            // U_r - U_i, Bt x Ma (columns beyond N stay zero)
  T* e = tmp + Bt * Ma;  // G_r + G_i, Bt x N
  for (int64_t i = 0; i < Bt; ++i) {
    const T* ui = u + i * Pu;
    const T* gi = g + i * ldg;
    T* di = d + i * Ma;
    T* ei = e + i * N;
    for (int64_t k = 0; k < N; ++k) {
      di[k] = ui[k] - ui[N + k];
      ei[k] = gi[k] + gi[N + k];
    }
  }
  T* a1 = acc;
  T* a2 = acc + Ma * N;
  T* a3 = acc + 2 * Ma * N;
  for (int64_t i0 = 0; i0 < Ma; i0 += MR)
    for (int64_t q = 0; q < N / NR; ++q) {
      const int64_t o = i0 * N + q * NR;
      micro<T, VB, MR, NV>(Bt, u + i0, 1, Pu, g + q * NR, ldg, a1 + o, N, true);
      micro<T, VB, MR, NV>(Bt, u + N + i0, 1, Pu, g + N + q * NR, ldg, a2 + o, N, true);
      micro<T, VB, MR, NV>(Bt, d + i0, 1, Ma, e + q * NR, N, a3 + o, N, true);
    }
}

// Rows of a tile are a multiple of 4 KiB apart in the (B, L, H, ...) tensors, so the rows of
// one token share cache sets; the per-token inputs and outputs of a block of TB tokens are
// therefore staged through contiguous per-thread buffers, copied row by row (a regular stride
// the hardware prefetchers follow).
template <typename T>
QLAM_INLINE void gather(const T* __restrict src, int64_t L, int64_t H, int64_t h, int64_t b0,
                        int64_t nv, int64_t t0, int64_t nt, int64_t TB, int64_t w,
                        T* __restrict dst) {
  for (int64_t i = 0; i < nv; ++i)
    for (int64_t tl = 0; tl < nt; ++tl)
      std::memcpy(dst + (i * TB + tl) * w, src + (((b0 + i) * L + t0 + tl) * H + h) * w,
                  w * sizeof(T));
}

// One cache line (64 bytes) stored past the caches (a non-temporal store): the outputs are
// written once and read by the next operation, so they need not evict the working set, and
// the line is not read from memory first.
template <typename T>
QLAM_INLINE void stream_line(T* d, const T* s) {
#if defined(__x86_64__)
  if constexpr (sizeof(T) == 4) {
    for (int k = 0; k < 16; k += 4) _mm_stream_ps(d + k, _mm_loadu_ps(s + k));
  } else {
    for (int k = 0; k < 8; k += 2) _mm_stream_pd(d + k, _mm_loadu_pd(s + k));
  }
#else
  std::memcpy(d, s, 64);
#endif
}

// Orders this thread's streamed (non-temporal) stores before the end of its tasks, after which
// other threads may read the outputs.
QLAM_INLINE void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

template <typename T>
QLAM_INLINE void scatter(const T* __restrict src, int64_t L, int64_t H, int64_t h, int64_t b0,
                         int64_t nv, int64_t t0, int64_t nt, int64_t TB, int64_t w,
                         T* __restrict dst) {
  constexpr int64_t W = 64 / static_cast<int64_t>(sizeof(T));
  const bool stream = w % W == 0 && (reinterpret_cast<uintptr_t>(dst) & 63) == 0;
  for (int64_t i = 0; i < nv; ++i)
    for (int64_t tl = 0; tl < nt; ++tl) {
      T* d = dst + (((b0 + i) * L + t0 + tl) * H + h) * w;
      const T* s = src + (i * TB + tl) * w;
      if (stream) {
        for (int64_t k = 0; k < w; k += W) stream_line<T>(d + k, s + k);
      } else {
        std::memcpy(d, s, w * sizeof(T));
      }
    }
}

// Prefetch the phases of token t for the rows of a tile, one block of tokens ahead of their
// gather: the rows lie an example apart, a pattern the hardware prefetchers do not follow, and
// spreading the requests over the block's tokens overlaps them with its products.
template <typename T>
QLAM_INLINE void prefetch_token(const T* src, int64_t L, int64_t H, int64_t h, int64_t b0,
                                int64_t nv, int64_t t, int64_t w) {
  const int64_t bytes = w * static_cast<int64_t>(sizeof(T));
  for (int64_t i = 0; i < nv; ++i) {
    const char* row = reinterpret_cast<const char*>(src + (((b0 + i) * L + t) * H + h) * w);
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off, 0, 3);
  }
}

// out (W) = off + sum_f a[f] map_f, map_f the row at map + f * ld: one token's phases from
// its F angles (the dense and the factored scans' phase maps).
template <typename T>
QLAM_INLINE void affine_row(const T* __restrict a, int64_t F, const T* __restrict map,
                            int64_t ld, const T* __restrict off, int64_t W, T* __restrict out) {
  for (int64_t j = 0; j < W; ++j) out[j] = off[j];
  for (int64_t f = 0; f < F; ++f) {
    const T af = a[f];
    const T* m = map + f * ld;
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) out[j] += af * m[j];
  }
}

// The phases of a block of tokens, staged as rows of width W at dst (row i * TB + tl): copied
// from src (map null, rows of width W) or expanded from its rows of F angles, gathered into
// tmp, as off + angles . map (map (F, W)).
template <typename T>
QLAM_INLINE void gather_phases(const T* src, const T* __restrict map, const T* __restrict off,
                               int64_t F, int64_t W, int64_t L, int64_t H, int64_t h,
                               int64_t b0, int64_t nv, int64_t t0, int64_t nt, int64_t TB,
                               T* __restrict tmp, T* __restrict dst) {
  if (map == nullptr) {
    gather<T>(src, L, H, h, b0, nv, t0, nt, TB, W, dst);
    return;
  }
  gather<T>(src, L, H, h, b0, nv, t0, nt, TB, F, tmp);
  for (int64_t i = 0; i < nv; ++i)
    for (int64_t tl = 0; tl < nt; ++tl)
      affine_row<T>(tmp + (i * TB + tl) * F, F, map, W, off, W, dst + (i * TB + tl) * W);
}

// The phase gradients of a block (rows of width W at src, as gather_phases stages them) out
// to dst: as they are (map_t null), or as the angles' gradients g . map^T (rows of F, via
// tmp). map_t (W, roundup(F, AB)) is the map transposed and zero-padded, so each block of AB
// angles is summed in registers along the row, without a reduction across lanes.
constexpr int64_t AB = 16;

template <typename T>
QLAM_INLINE void scatter_phase_grads(const T* __restrict src, const T* __restrict map_t,
                                     int64_t F, int64_t W, int64_t L, int64_t H, int64_t h,
                                     int64_t b0, int64_t nv, int64_t t0, int64_t nt, int64_t TB,
                                     T* __restrict tmp, T* dst) {
  if (map_t == nullptr) {
    scatter<T>(src, L, H, h, b0, nv, t0, nt, TB, W, dst);
    return;
  }
  for (int64_t i = 0; i < nv; ++i)
    for (int64_t tl = 0; tl < nt; ++tl) {
      const T* g = src + (i * TB + tl) * W;
      T* o = tmp + (i * TB + tl) * F;
      const int64_t Fp = roundup(F, AB);
      // (a plain array the compiler keeps in registers of the ISA's width: a GCC vector of
      // AB elements wider than them was spilled through the stack, 2x the whole backward on
      // AVX2)
      for (int64_t f0 = 0; f0 < F; f0 += AB) {
        T acc[AB] = {};
        for (int64_t j = 0; j < W; ++j) {
          const T gj = g[j];
          const T* __restrict m = map_t + j * Fp + f0;
          for (int64_t f = 0; f < AB; ++f) acc[f] += gj * m[f];
        }
        for (int64_t f = 0; f < std::min(AB, F - f0); ++f) o[f0 + f] = acc[f];
      }
    }
  scatter<T>(tmp, L, H, h, b0, nv, t0, nt, TB, F, dst);
}

template <typename T, int VB, int MR, int NV>
QLAM_INLINE void forward_tasks(const Plan<T>& p, int64_t begin, int64_t end, int thr) {
  const int64_t N = p.N, N2 = 2 * N, L = p.L, H = p.H, R = p.R, P = p.P, Pu = p.Pu, Bt = p.Bt;
  const int64_t TB = p.TB, RN = R * N;
  T* U = p.scratch + thr * p.scratch_size;  // Bt x Pu: rotated states
  T* V = U + Bt * Pu;                        // Bt x P: readout vectors
  T* tmp = V + Bt * P;                       // 2 Bt N (cmul)
  T* cs = tmp + 2 * Bt * N;                  // cos, sin: 2 x N
  T* s_ph = cs + 2 * N;                      // staged phases, Bt x TB x R N
  T* s_rp = s_ph + Bt * TB * RN;             // staged read phases, Bt x TB x N
  T* s_pr = s_rp + Bt * TB * N;              // staged probabilities, Bt x TB x N
  T* s_ang = s_pr + Bt * TB * N;             // gathered angles (phase maps), Bt x TB x F
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / p.ntile, tile = task % p.ntile;
    const int64_t b0 = tile * Bt, nv = std::min(Bt, p.B - b0);
    T* Z = p.Z + task * Bt * P;
    std::fill(U, U + Bt * Pu, T(0));
    for (int64_t t0 = 0; t0 < L; t0 += TB) {
      const int64_t nt = std::min(TB, L - t0);
      gather_phases<T>(p.phases, p.pmap, p.poff, p.F, RN, L, H, h, b0, nv, t0, nt, TB, s_ang,
                       s_ph);
      if (p.rpack != nullptr)
        gather_phases<T>(p.read_phases, p.rmap, p.roff, p.Fr, N, L, H, h, b0, nv, t0, nt, TB,
                         s_ang, s_rp);
      for (int64_t tl = 0; tl < nt; ++tl) {
        const int64_t t = t0 + tl;
        if (t + TB < L) prefetch_token<T>(p.phases, L, H, h, b0, nv, t + TB, p.F);
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t i = 0; i < nv; ++i) {
            sincos_row<T>(s_ph + (i * TB + tl) * RN + r * N, cs, cs + N, N);
            rotate_row<T>(Z + i * P, cs, cs + N, U + i * Pu, N);
          }
          cmul<T, VB, MR, NV>(p, U, Pu, p.wpack + (h * R + r) * p.pack_size, Z, P, tmp);
        }
        if (p.renorm > 0 && (t + 1) % p.renorm == 0) {
          for (int64_t i = 0; i < nv; ++i) {
            T* z = Z + i * P;
            T sq = T(0);
            for (int64_t k = 0; k < N2; ++k) sq += z[k] * z[k];
            const T scale = T(1) / std::sqrt(sq);
            for (int64_t k = 0; k < N2; ++k) z[k] *= scale;
          }
        }
        const T* src = Z;
        if (p.rpack != nullptr) {
          for (int64_t i = 0; i < nv; ++i) {
            sincos_row<T>(s_rp + (i * TB + tl) * N, cs, cs + N, N);
            rotate_row<T>(Z + i * P, cs, cs + N, U + i * Pu, N);
          }
          cmul<T, VB, MR, NV>(p, U, Pu, p.rpack + h * p.pack_size, V, P, tmp);
          src = V;
        }
        for (int64_t i = 0; i < nv; ++i) {
          const T* s = src + i * P;
          T* out = s_pr + (i * TB + tl) * N;
          for (int64_t k = 0; k < N; ++k) out[k] = s[k] * s[k] + s[N + k] * s[N + k];
        }
      }
      scatter<T>(s_pr, L, H, h, b0, nv, t0, nt, TB, N, p.probs);
    }
  }
  stream_fence();
}

template <typename T, int VB, int MR, int NV>
QLAM_INLINE void backward_tasks(const Plan<T>& p, int64_t begin, int64_t end, int thr) {
  const int64_t N = p.N, L = p.L, H = p.H, R = p.R, P = p.P, Pu = p.Pu, Bt = p.Bt;
  const int64_t TB = p.TB, RN = R * N;
  const int64_t ntmp = Bt * std::max(p.Ma + N, 2 * N);
  T* U = p.scratch + thr * p.scratch_size;  // Bt x Pu: rotated (pre-matrix) vectors
  T* G = U + Bt * Pu;                        // Bt x P: their adjoints
  T* GV = G + Bt * P;                        // Bt x P: adjoint of the readout vector
  T* tmp = GV + Bt * P;                      // Bt (Ma + N) (cmul: 2 Bt N)
  T* cs = tmp + ntmp;                        // cos, sin: Bt x 2N (the readout's kept per
                                             // row from rotation to unrotation; row 0
                                             // serves the layers)
  T* s_ph = cs + 2 * Bt * N;                 // staged blocks of TB tokens: phases,
  T* s_gph = s_ph + Bt * TB * RN;            // their gradients,
  T* s_gp = s_gph + Bt * TB * RN;            // probability gradients,
  T* s_rp = s_gp + Bt * TB * N;              // read phases
  T* s_grp = s_rp + Bt * TB * N;             // and their gradients
  T* s_ang = s_grp + Bt * TB * N;            // angles / their gradients (phase maps)
  const bool read = p.rpack != nullptr, has_gp = p.gprobs != nullptr;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / p.ntile, tile = task % p.ntile;
    const int64_t b0 = tile * Bt, nv = std::min(Bt, p.B - b0);
    T* Z = p.Z + task * Bt * P;
    T* A = p.A + task * Bt * P;
    T* gw = p.gw + (static_cast<int64_t>(thr) * H + h) * R * p.acc_size;
    T* gwr = read ? p.gwr + (static_cast<int64_t>(thr) * H + h) * p.acc_size : nullptr;
    std::fill(U, U + Bt * Pu, T(0));
    std::fill(GV, GV + Bt * P, T(0));
    std::fill(tmp, tmp + ntmp, T(0));
    for (int64_t t0 = ((L - 1) / TB) * TB; t0 >= 0; t0 -= TB) {
      const int64_t nt = std::min(TB, L - t0);
      gather_phases<T>(p.phases, p.pmap, p.poff, p.F, RN, L, H, h, b0, nv, t0, nt, TB, s_ang,
                       s_ph);
      if (has_gp) gather<T>(p.gprobs, L, H, h, b0, nv, t0, nt, TB, N, s_gp);
      if (read)
        gather_phases<T>(p.read_phases, p.rmap, p.roff, p.Fr, N, L, H, h, b0, nv, t0, nt, TB,
                         s_ang, s_rp);
      for (int64_t tl = nt - 1; tl >= 0; --tl) {
        if (t0 + tl >= TB) prefetch_token<T>(p.phases, L, H, h, b0, nv, t0 + tl - TB, p.F);
        // readout at t: the adjoint of psi_t receives the probability gradient
        if (has_gp && read) {
          for (int64_t i = 0; i < nv; ++i) {
            T* c = cs + i * 2 * N;
            sincos_row<T>(s_rp + (i * TB + tl) * N, c, c + N, N);
            rotate_row<T>(Z + i * P, c, c + N, U + i * Pu, N);
          }
          cmul<T, VB, MR, NV>(p, U, Pu, p.rpack + h * p.pack_size, G, P, tmp);  // v
          for (int64_t i = 0; i < nv; ++i) {
            const T* gp = s_gp + (i * TB + tl) * N;
            const T* v = G + i * P;
            T* gv = GV + i * P;
            for (int64_t k = 0; k < N; ++k) {
              gv[k] = T(2) * v[k] * gp[k];
              gv[N + k] = T(2) * v[N + k] * gp[k];
            }
          }
          couter<T, VB, MR, NV>(p, U, GV, P, gwr, tmp);                          // dW_read
          cmul<T, VB, MR, NV>(p, GV, P, p.rbpack + h * p.pack_size, G, P, tmp);  // g_u
          for (int64_t i = 0; i < nv; ++i) {
            const T* c = cs + i * 2 * N;
            unrotate_step<T, true>(U + i * Pu, G + i * P, c, c + N, nullptr, A + i * P,
                                   s_grp + (i * TB + tl) * N, N);
          }
        } else if (has_gp) {
          for (int64_t i = 0; i < nv; ++i) {
            const T* gp = s_gp + (i * TB + tl) * N;
            const T* z = Z + i * P;
            T* a = A + i * P;
            for (int64_t k = 0; k < N; ++k) {
              a[k] += T(2) * z[k] * gp[k];
              a[N + k] += T(2) * z[N + k] * gp[k];
            }
          }
        }
        // layers in reverse: u = W^dagger psi, g_u = W^dagger a, dW += (u, a), undo the
        // rotation
        for (int64_t r = R - 1; r >= 0; --r) {
          const T* pk = p.wpack + (h * R + r) * p.pack_size;
          cmul<T, VB, MR, NV>(p, Z, P, pk, U, Pu, tmp);
          cmul<T, VB, MR, NV>(p, A, P, pk, G, P, tmp);
          couter<T, VB, MR, NV>(p, U, A, P, gw + r * p.acc_size, tmp);
          for (int64_t i = 0; i < nv; ++i) {
            const int64_t off = (i * TB + tl) * RN + r * N;
            const T* u = U + i * Pu;
            const T* g = G + i * P;
            sincos_row<T>(s_ph + off, cs, cs + N, N);
            unrotate_step<T>(u, g, cs, cs + N, Z + i * P, A + i * P, s_gph + off, N);
          }
        }
      }
      scatter_phase_grads<T>(s_gph, p.pmap_t, p.F, RN, L, H, h, b0, nv, t0, nt, TB, s_ang,
                             p.gphase);
      if (has_gp && read)
        scatter_phase_grads<T>(s_grp, p.rmap_t, p.Fr, N, L, H, h, b0, nv, t0, nt, TB, s_ang,
                               p.grphase);
    }
  }
  stream_fence();
}

// Scratch elements per thread of each pass: the buffers carved out at the top of forward_tasks
// and backward_tasks, rounded up to a 64-element multiple. angles: the width of the staged
// angles (0 without phase maps).
template <typename T>
int64_t angles(const Plan<T>& p) {
  return std::max(p.pmap != nullptr ? p.F : 0, p.rmap != nullptr ? p.Fr : 0);
}

template <typename T>
int64_t forward_scratch(const Plan<T>& p) {
  const int64_t N = p.N;
  return roundup(p.Bt * (p.Pu + p.P + 2 * N) + 2 * N + p.Bt * p.TB * ((p.R + 2) * N + angles(p)),
                 64);
}

template <typename T>
int64_t backward_scratch(const Plan<T>& p) {
  const int64_t N = p.N;
  return roundup(p.Bt * (p.Pu + 2 * p.P + std::max(p.Ma + N, 2 * N) + 2 * N) +
                     p.Bt * p.TB * ((2 * p.R + 3) * N + angles(p)),
                 64);
}

// ------------------------------------------------------------------------------------------
// The gate-factored scan. A layer whose fixed block is single-qubit gates followed by a
// permutation (a CNOT ring, say) is W = P (U_0 ⊗ ... ⊗ U_{n-1}): a 2x2 gate per wire (wire
// q's bit has stride N >> (q + 1)). Per token and layer the state of one example
// (cache-resident: 64 KiB at 12 qubits in float64) is rotated, the G = n - 4 high gates
// applied in place, pass by pass (their pairs lie at least FK = 16 amplitudes apart, a
// vector or more), then the four low wires in registers on each group of FK contiguous
// amplitudes, whose result is scattered by the inverse permutation inv, (P y)[inv[j]] = y[j]:
// O(N n) instead of the dense O(N^2); with separable phases given per wire the rotation is
// folded into the gates instead (wire_phases). A task is one (head, example); the backward is
// the same reversible walk as the dense one, with per-thread accumulators of the gates'
// gradients (dU += g x^H).
constexpr int FK = 16;
constexpr int FLOW = 4;               // the low wires, in registers (low_apply)
constexpr int LANE_PLANES = 4 * FK;  // c0r, c0i, c1r, c1i of one low wire (lane_coeffs)

template <typename T>
struct FPlan {
  int64_t B, L, H, R, N, G;
  int64_t renorm = 0;
  const T* phases = nullptr;  // (B, L, H, R, N), or the angles (B, L, H, F) with pmap
  // optional phase map: a row's phases are poff[r] + angles . pmap[r] (pmap (R, F, N), poff
  // (R, N)); the backward then returns the angles' gradients (B, L, H, F) in gphase and the
  // offset's, summed over the batch, after the gates' in acc
  int64_t F = 0;
  const T* pmap = nullptr;
  const T* poff = nullptr;
  // per-wire maps (wire_phases): pmap (R, F, n + 1), poff (R, n + 1); the phases are then
  // folded into the gates (wire_gates), no rotation pass; the offset's gradient is (n + 1)
  bool wire = false;
  const T* gates = nullptr;   // (H, R, G + FLOW, 2, 2, 2): [re, im] planes of each 2x2
  const T* lanes = nullptr;   // (H, R, FLOW, LANE_PLANES): the low wires' (lane_coeffs; U^H
                              // in the backward)
  const int64_t* inv = nullptr;  // (R, N)
  const T* state_in = nullptr;   // (B, H, 2, N): psi0 (forward) or the final state
  const T* adj_in = nullptr;     // (B, H, 2, N) or null: the final state's gradient
  T* state_out = nullptr;        // (B, H, 2, N): the final state (forward)
  T* adj_out = nullptr;          // (B, H, 2, N): the gradient of psi0 (backward)
  T* probs = nullptr;            // (B, L, H, N)
  const T* gprobs = nullptr;     // (B, L, H, N) or null
  T* gphase = nullptr;           // (B, L, H, R, N), or (B, L, H, F) with pmap
  T* acc = nullptr;              // per thread (H, R, acc_size): 8 G high gate entries, the
  int64_t acc_size = 0;          // low wires' lane sums (FLOW LANE_PLANES), N of the offset
                                 // with pmap; per wire: 8 n gate entries, n + 1 offset
  T* scratch = nullptr;          // per thread: 7 N (forward), 12 N (backward), + WIRE_SCRATCH
  int64_t scratch_size = 0;
};

// The per-wire mode's per-thread buffers, after the states: a token's phases (n + 1, padded
// to WIRE_PAD), their cos | sin, its gates and their gradients (8 n each), the low wires'
// coefficient planes and lane sums.
constexpr int64_t WIRE_PAD = 32;  // n + 1 <= 31
constexpr int64_t WIRE_SCRATCH = 3 * WIRE_PAD + 2 * 8 * WIRE_PAD + 2 * FLOW * LANE_PLANES;

template <typename T>
struct WireScratch {
  T *al, *cs, *vg, *dv, *lp, *le;
  explicit WireScratch(T* p)
      : al(p), cs(al + WIRE_PAD), vg(cs + 2 * WIRE_PAD), dv(vg + 8 * WIRE_PAD),
        lp(dv + 8 * WIRE_PAD), le(lp + FLOW * LANE_PLANES) {}
};

// z <- U z on the pairs (i, i + s), i with bit s clear; u: re00 re01 re10 re11 im00 .. im11.
template <typename T>
QLAM_INLINE void gate_apply(T* zr, T* zi, const T* u, int64_t N, int64_t s) {
  const T ar = u[0], br = u[1], cr = u[2], dr = u[3], ai = u[4], bi = u[5], ci = u[6],
          di = u[7];
  for (int64_t base = 0; base < N; base += 2 * s) {
    T* __restrict r0p = zr + base;
    T* __restrict i0p = zi + base;
    T* __restrict r1p = r0p + s;
    T* __restrict i1p = i0p + s;
#pragma omp simd
    for (int64_t j = 0; j < s; ++j) {
      const T r0 = r0p[j], i0 = i0p[j], r1 = r1p[j], i1 = i1p[j];
      r0p[j] = ar * r0 - ai * i0 + br * r1 - bi * i1;
      i0p[j] = ar * i0 + ai * r0 + br * i1 + bi * r1;
      r1p[j] = cr * r0 - ci * i0 + dr * r1 - di * i1;
      i1p[j] = cr * i0 + ci * r0 + dr * i1 + di * r1;
    }
  }
}

// The backward through one gate, in place: the state y -> x = U^H y, its adjoint g -> U^H g,
// and du += g x^H summed over the pairs (layout of u). s is a multiple of FK, so of the
// vector width W: the sums are kept per lane of one vector (e[entry][lane], eight registers)
// and reduced once at the end, not once per block. (Lanes of FK would be 16 registers on
// AVX2, all it has: they were spilled and reloaded at every block, 5x slower.)
template <typename T, int VB>
QLAM_INLINE void gate_unapply(T* zr, T* zi, T* gr, T* gi, const T* u, T* du, int64_t N,
                              int64_t s) {
  constexpr int W = VB / static_cast<int>(sizeof(T));
  const T ar = u[0], br = u[1], cr = u[2], dr = u[3], ai = u[4], bi = u[5], ci = u[6],
          di = u[7];
  T e[8][W] = {};
  for (int64_t base = 0; base < N; base += 2 * s)
    for (int64_t j0 = base; j0 < base + s; j0 += W) {
      T* __restrict zr0 = zr + j0;
      T* __restrict zi0 = zi + j0;
      T* __restrict zr1 = zr0 + s;
      T* __restrict zi1 = zi0 + s;
      T* __restrict gr0 = gr + j0;
      T* __restrict gi0 = gi + j0;
      T* __restrict gr1 = gr0 + s;
      T* __restrict gi1 = gi0 + s;
#pragma omp simd
      for (int j = 0; j < W; ++j) {
        const T y0r = zr0[j], y0i = zi0[j], y1r = zr1[j], y1i = zi1[j];
        const T h0r = gr0[j], h0i = gi0[j], h1r = gr1[j], h1i = gi1[j];
        const T x0r = ar * y0r + ai * y0i + cr * y1r + ci * y1i;
        const T x0i = ar * y0i - ai * y0r + cr * y1i - ci * y1r;
        const T x1r = br * y0r + bi * y0i + dr * y1r + di * y1i;
        const T x1i = br * y0i - bi * y0r + dr * y1i - di * y1r;
        zr0[j] = x0r;
        zi0[j] = x0i;
        zr1[j] = x1r;
        zi1[j] = x1i;
        gr0[j] = ar * h0r + ai * h0i + cr * h1r + ci * h1i;
        gi0[j] = ar * h0i - ai * h0r + cr * h1i - ci * h1r;
        gr1[j] = br * h0r + bi * h0i + dr * h1r + di * h1i;
        gi1[j] = br * h0i - bi * h0r + dr * h1i - di * h1r;
        e[0][j] += h0r * x0r + h0i * x0i;  // re (0, 0)
        e[1][j] += h0r * x1r + h0i * x1i;  // re (0, 1)
        e[2][j] += h1r * x0r + h1i * x0i;  // re (1, 0)
        e[3][j] += h1r * x1r + h1i * x1i;  // re (1, 1)
        e[4][j] += h0i * x0r - h0r * x0i;  // im (0, 0)
        e[5][j] += h0i * x1r - h0r * x1i;
        e[6][j] += h1i * x0r - h1r * x0i;
        e[7][j] += h1i * x1r - h1r * x1i;
      }
    }
  for (int c = 0; c < 8; ++c) {
    T sum = T(0);
    for (int j = 0; j < W; ++j) sum += e[c][j];
    du[c] += sum;
  }
}

// The last FLOW = 4 wires (strides 8, 4, 2, 1 inside each group of FK contiguous amplitudes)
// are applied in registers, group by group: lane j of a group, whose bit on the wire of
// stride s is b, gets y_j = U[b][b] x_j + U[b][1-b] x_{j^s}, two complex products with
// per-lane coefficients (planes c0r, c0i, c1r, c1i of FK lanes, from lane_coeffs) and a
// permutation of the lanes: whole vectors swapped where s >= the vector width, a shuffle
// inside each vector below it. 2 complex multiply-adds per amplitude and wire, as for the
// high gates, instead of the 16 of a dense 16 x 16 block.

template <typename T, int VB>
struct Group {  // one plane of a group of FK amplitudes as NV vectors of W lanes
  static constexpr int W = VB / static_cast<int>(sizeof(T));
  static constexpr int NV = FK / W;
  typedef T vec __attribute__((vector_size(VB)));
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> idx;
  typedef idx mask __attribute__((vector_size(VB)));

  static QLAM_INLINE void load(const T* p, vec* v) {
    for (int i = 0; i < NV; ++i) std::memcpy(&v[i], p + i * W, VB);
  }
  static QLAM_INLINE void store(const vec* v, T* p) {
    for (int i = 0; i < NV; ++i) std::memcpy(p + i * W, &v[i], VB);
  }
  // the four consecutive planes of FK lanes at p (coefficients or gradient sums)
  static QLAM_INLINE void load4(const T* p, vec (&v)[4][NV]) {
    for (int k = 0; k < 4; ++k) load(p + k * FK, v[k]);
  }
  static QLAM_INLINE void store4(const vec (&v)[4][NV], T* p) {
    for (int k = 0; k < 4; ++k) store(v[k], p + k * FK);
  }
  // lane j of the result is x[j ^ M], M < W
  template <int M>
  static QLAM_INLINE vec shuffled(vec x) {
    mask m;
    for (int j = 0; j < W; ++j) m[j] = static_cast<idx>(j ^ M);
    return __builtin_shuffle(x, m);
  }
  // (sr, si)[j] = (xr, xi)[j ^ S]: a complex plane's lanes paired across the wire of stride S
  template <int S>
  static QLAM_INLINE void swap(const vec* xr, const vec* xi, vec* sr, vec* si) {
    for (int i = 0; i < NV; ++i) {
      if constexpr (S >= W) {
        sr[i] = xr[i ^ (S / W)];
        si[i] = xi[i ^ (S / W)];
      } else {
        sr[i] = shuffled<S>(xr[i]);
        si[i] = shuffled<S>(xi[i]);
      }
    }
  }
  // every lane j <- the sum of the lanes that agree with j on bit S (all lanes for S >= W)
  template <int S>
  static QLAM_INLINE vec fold(vec v) {
    if constexpr (W > 1 && S != 1) v += shuffled<1>(v);
    if constexpr (W > 2 && S != 2) v += shuffled<2>(v);
    if constexpr (W > 4 && S != 4) v += shuffled<4>(v);
    if constexpr (W > 8 && S != 8) v += shuffled<8>(v);
    return v;
  }
};

// The coefficient planes of the 2x2 u (layout of gate_apply) on the wire of stride s, or of
// U^H (adjoint): lane j with bit b gets U[b][b] and U[b][1-b] (U^H: conj U[b][b], conj
// U[1-b][b]).
template <typename T>
QLAM_INLINE void lane_coeffs(const T* u, int s, bool adjoint, T* __restrict c) {
  const T sign = adjoint ? T(-1) : T(1);
  const T v[4][2] = {{u[0], u[3]},  // (bit 0, bit 1) lanes of c0r, c0i, c1r, c1i
                     {sign * u[4], sign * u[7]},
                     {adjoint ? u[2] : u[1], adjoint ? u[1] : u[2]},
                     {sign * (adjoint ? u[6] : u[5]), sign * (adjoint ? u[5] : u[6])}};
  for (int k = 0; k < 4; ++k) {
    const T lo = v[k][0], hi = v[k][1];
#pragma omp simd
    for (int j = 0; j < FK; ++j) c[k * FK + j] = (j & s) ? hi : lo;
  }
}

// The 2x2 gradient du (layout of gate_apply, added to) of the wire of stride S from its lane
// sums e (lane_grad): lane j with bit b adds to entries (b, b) and (b, 1 - b). Vector sums
// and folds (Group::fold), no branches.
template <typename T, int VB, int S>
QLAM_INLINE void lane_sums(const T* __restrict e, T* __restrict du) {
  using Gr = Group<T, VB>;
  constexpr int at[4][2] = {{0, 3}, {4, 7}, {1, 2}, {5, 6}};  // entries of (bit 0, bit 1)
  for (int k = 0; k < 4; ++k) {
    typename Gr::vec v[Gr::NV], lo{}, hi{};
    Gr::load(e + k * FK, v);
    for (int i = 0; i < Gr::NV; ++i) {
      if (S >= Gr::W && ((i * Gr::W) & S) != 0)
        hi += v[i];
      else
        lo += v[i];
    }
    lo = Gr::template fold<S>(lo);
    hi = Gr::template fold<S>(hi);
    du[at[k][0]] += lo[0];
    du[at[k][1]] += S >= Gr::W ? hi[0] : lo[S % Gr::W];
  }
}

// lane_sums of the FLOW low wires' sums e (FLOW x LANE_PLANES) into du (FLOW gates).
template <typename T, int VB>
QLAM_INLINE void low_sums(const T* __restrict e, T* __restrict du) {
  lane_sums<T, VB, 8>(e, du);
  lane_sums<T, VB, 4>(e + LANE_PLANES, du + 8);
  lane_sums<T, VB, 2>(e + 2 * LANE_PLANES, du + 16);
  lane_sums<T, VB, 1>(e + 3 * LANE_PLANES, du + 24);
}

// e[0:n) = 0 for n a multiple of FK, by vector stores (std::fill of a few hundred floats
// compiles to rep stos, whose start-up cost outweighs the stores at this size)
template <typename T, int VB>
QLAM_INLINE void clear(T* __restrict e, int64_t n) {
  using Gr = Group<T, VB>;
  const typename Gr::vec zero[Gr::NV] = {};
  for (int64_t i = 0; i < n; i += FK) Gr::store(zero, e + i);
}

// (xr, xi) <- the gate of coefficient planes c (c0r, c0i, c1r, c1i) on the wire of stride S,
// in registers.
template <typename T, int VB, int S>
QLAM_INLINE void lane_gate(typename Group<T, VB>::vec* xr, typename Group<T, VB>::vec* xi,
                           const T* __restrict c) {
  using Gr = Group<T, VB>;
  constexpr int NV = Gr::NV;
  typename Gr::vec sr[NV], si[NV], k[4][NV];
  Gr::template swap<S>(xr, xi, sr, si);
  Gr::load4(c, k);
  for (int i = 0; i < NV; ++i) {
    const auto r = xr[i], m = xi[i];
    xr[i] = k[0][i] * r - k[1][i] * m + k[2][i] * sr[i] - k[3][i] * si[i];
    xi[i] = k[0][i] * m + k[1][i] * r + k[2][i] * si[i] + k[3][i] * sr[i];
  }
}

// The gate's gradient, per lane: e (planes of h conj(x): re, im; of h conj(x_{j^S}): re, im)
// += for the adjoint h at the gate's output and x its input; reduced by lane_sums.
template <typename T, int VB, int S>
QLAM_INLINE void lane_grad(const typename Group<T, VB>::vec* hr,
                           const typename Group<T, VB>::vec* hi,
                           const typename Group<T, VB>::vec* xr,
                           const typename Group<T, VB>::vec* xi, T* __restrict e) {
  using Gr = Group<T, VB>;
  constexpr int NV = Gr::NV;
  typename Gr::vec sr[NV], si[NV], acc[4][NV];
  Gr::template swap<S>(xr, xi, sr, si);
  Gr::load4(e, acc);
  for (int i = 0; i < NV; ++i) {
    acc[0][i] += hr[i] * xr[i] + hi[i] * xi[i];
    acc[1][i] += hi[i] * xr[i] - hr[i] * xi[i];
    acc[2][i] += hr[i] * sr[i] + hi[i] * si[i];
    acc[3][i] += hi[i] * sr[i] - hr[i] * si[i];
  }
  Gr::store4(acc, e);
}

// out[inv[g + j]] = ((U_{n-4} ⊗ .. ⊗ U_{n-1}) x_g)[j] for every group g of FK amplitudes;
// c: the four wires' coefficient planes (FLOW x LANE_PLANES, strides 8, 4, 2, 1).
template <typename T, int VB>
QLAM_INLINE void low_apply(const T* __restrict xr, const T* __restrict xi, const T* __restrict c,
                           const int64_t* __restrict inv, T* __restrict outr,
                           T* __restrict outi, int64_t N) {
  using Gr = Group<T, VB>;
  for (int64_t g = 0; g < N; g += FK) {
    typename Gr::vec vr[Gr::NV], vi[Gr::NV];
    Gr::load(xr + g, vr);
    Gr::load(xi + g, vi);
    lane_gate<T, VB, 8>(vr, vi, c);
    lane_gate<T, VB, 4>(vr, vi, c + LANE_PLANES);
    lane_gate<T, VB, 2>(vr, vi, c + 2 * LANE_PLANES);
    lane_gate<T, VB, 1>(vr, vi, c + 3 * LANE_PLANES);
    T yr[FK], yi[FK];
    Gr::store(vr, yr);
    Gr::store(vi, yi);
    for (int j = 0; j < FK; ++j) {
      outr[inv[g + j]] = yr[j];
      outi[inv[g + j]] = yi[j];
    }
  }
}

// The backward through the low wires and the permutation: y = z[inv], h = a[inv] per group;
// x = U^H y, gx = U^H h wire by wire into (xr, xi), (gxr, gxi) (c: the adjoints' planes), and
// each wire's per-lane gradient added to e (FLOW x LANE_PLANES, lane_grad).
template <typename T, int VB>
QLAM_INLINE void low_unapply(const T* __restrict zr, const T* __restrict zi,
                             const T* __restrict ar, const T* __restrict ai,
                             const T* __restrict c, const int64_t* __restrict inv,
                             T* __restrict xr, T* __restrict xi, T* __restrict gxr,
                             T* __restrict gxi, T* __restrict e, int64_t N) {
  using Gr = Group<T, VB>;
  for (int64_t g = 0; g < N; g += FK) {
    T yr[FK], yi[FK], hr[FK], hi[FK];
    for (int j = 0; j < FK; ++j) {
      const int64_t src = inv[g + j];
      yr[j] = zr[src];
      yi[j] = zi[src];
      hr[j] = ar[src];
      hi[j] = ai[src];
    }
    typename Gr::vec vr[Gr::NV], vi[Gr::NV], wr[Gr::NV], wi[Gr::NV];
    Gr::load(yr, vr);
    Gr::load(yi, vi);
    Gr::load(hr, wr);
    Gr::load(hi, wi);
    // U^H wire by wire (they commute), each gradient taken with the adjoint at its output
    lane_gate<T, VB, 1>(vr, vi, c + 3 * LANE_PLANES);
    lane_grad<T, VB, 1>(wr, wi, vr, vi, e + 3 * LANE_PLANES);
    lane_gate<T, VB, 1>(wr, wi, c + 3 * LANE_PLANES);
    lane_gate<T, VB, 2>(vr, vi, c + 2 * LANE_PLANES);
    lane_grad<T, VB, 2>(wr, wi, vr, vi, e + 2 * LANE_PLANES);
    lane_gate<T, VB, 2>(wr, wi, c + 2 * LANE_PLANES);
    lane_gate<T, VB, 4>(vr, vi, c + LANE_PLANES);
    lane_grad<T, VB, 4>(wr, wi, vr, vi, e + LANE_PLANES);
    lane_gate<T, VB, 4>(wr, wi, c + LANE_PLANES);
    lane_gate<T, VB, 8>(vr, vi, c);
    lane_grad<T, VB, 8>(wr, wi, vr, vi, e);
    lane_gate<T, VB, 8>(wr, wi, c);
    Gr::store(vr, xr + g);
    Gr::store(vi, xi + g);
    Gr::store(wr, gxr + g);
    Gr::store(wi, gxi + g);
  }
}

// The phases of layer r for one token: the given row, or poff[r] + angles . pmap[r] expanded
// into row (N).
template <typename T>
QLAM_INLINE const T* factored_phases(const FPlan<T>& p, int64_t b, int64_t t, int64_t h,
                                     int64_t r, T* __restrict row) {
  const int64_t N = p.N, F = p.F;
  if (p.pmap == nullptr) return p.phases + (((b * p.L + t) * p.H + h) * p.R + r) * N;
  affine_row<T>(p.phases + ((b * p.L + t) * p.H + h) * F, F, p.pmap + r * F * N, N,
                p.poff + r * N, N, row);
  return row;
}

// The phase gradient row gph (N) of layer r out to the angles' gradients (pmap^T, added to
// ga (F), zeroed by the caller at the token's first layer) and the offset's (added to go).
template <typename T>
QLAM_INLINE void factored_phase_grads(const FPlan<T>& p, int64_t r, const T* __restrict gph,
                                      T* __restrict ga, T* __restrict go) {
  const int64_t N = p.N, F = p.F;
  for (int64_t f = 0; f < F; ++f) {
    const T* __restrict m = p.pmap + (r * F + f) * N;
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t k = 0; k < N; ++k) sum += gph[k] * m[k];
    ga[f] += sum;
  }
#pragma omp simd
  for (int64_t k = 0; k < N; ++k) go[k] += gph[k];
}

// Per-wire mode. A layer whose phases are separable, phi[k] = al[n] + sum_q al[q] bit_q(k)
// (single-qubit diagonal gates: RZ(x) on every wire, say), has diag(e^{i phi}) =
// e^{i al[n]} (D_0 ⊗ .. ⊗ D_{n-1}) with D_q = diag(1, e^{i al[q]}): each D_q is folded into
// its wire's gate, V_q = U_q D_q (wire 0 also takes e^{i al[n]}), so a token costs n + 1
// cos / sin and no pass over the state for the rotation (and none for its inverse and phase
// gradient in the backward). al = poff[r] + angles . pmap[r] (n + 1, padded with zeros to
// WIRE_PAD, so that cos / sin is whole vectors), cos | sin into cs (WIRE_PAD each).

template <typename T>
QLAM_INLINE void wire_phases(const FPlan<T>& p, int64_t b, int64_t t, int64_t h, int64_t r,
                             T* __restrict al, T* __restrict cs) {
  const int64_t n1 = p.G + FLOW + 1, F = p.F, pad = roundup(n1, 16);
  const T* ang = p.phases + ((b * p.L + t) * p.H + h) * F;
  const T* m = p.pmap + r * F * n1;
  for (int64_t q = 0; q < n1; ++q) al[q] = p.poff[r * n1 + q];
  for (int64_t q = n1; q < pad; ++q) al[q] = T(0);
  for (int64_t f = 0; f < F; ++f)
    for (int64_t q = 0; q < n1; ++q) al[q] += ang[f] * m[f * n1 + q];
  sincos_row<T>(al, cs, cs + WIRE_PAD, pad);
}

// The diagonal entries (d0, d1) of wire q's D_q (times the global phase on wire 0) as
// [re, im] pairs, from cs (wire_phases).
template <typename T>
QLAM_INLINE void wire_diag(const T* cs, int64_t n, int64_t q, T* d) {
  const T* c = cs;
  const T* s = cs + WIRE_PAD;
  d[0] = q == 0 ? c[n] : T(1);
  d[1] = q == 0 ? s[n] : T(0);
  d[2] = d[0] * c[q] - d[1] * s[q];
  d[3] = d[0] * s[q] + d[1] * c[q];
}

// vg (n gates, layout of gate_apply) <- U_q D_q: column c of U_q times d_c.
template <typename T>
QLAM_INLINE void wire_gates(const T* __restrict u, const T* __restrict cs, int64_t n,
                            T* __restrict vg) {
  for (int64_t q = 0; q < n; ++q) {
    T d[4];
    wire_diag<T>(cs, n, q, d);
    const T* g = u + 8 * q;
    T* v = vg + 8 * q;
    for (int e = 0; e < 4; ++e) {
      const T dr = d[2 * (e & 1)], di = d[2 * (e & 1) + 1];
      v[e] = g[e] * dr - g[4 + e] * di;
      v[4 + e] = g[e] * di + g[4 + e] * dr;
    }
  }
}

// The chain rule of V_q = U_q D_q for one token and layer, from dv (the V's gradients,
// sum h x^H): du (the U's, acc) += dv D^H; the phases' gradients dphi_q = -Im(d1 sum_a
// U_a1 conj(dv_a1)) and the global one -Im(sum V0 conj(dv0)), pushed through the map to the
// angles (ga, F) and added to the offset's (go, n + 1).
template <typename T>
QLAM_INLINE void wire_grads(const FPlan<T>& p, int64_t r, const T* __restrict u,
                            const T* __restrict vg, const T* __restrict cs,
                            const T* __restrict dv, T* __restrict du, T* __restrict ga,
                            T* __restrict go) {
  const int64_t n = p.G + FLOW, n1 = n + 1, F = p.F;
  T dphi[WIRE_PAD];
  dphi[n] = T(0);
  for (int64_t q = 0; q < n; ++q) {
    T d[4];
    wire_diag<T>(cs, n, q, d);
    const T* g = u + 8 * q;
    const T* e = dv + 8 * q;
    T* o = du + 8 * q;
    for (int k = 0; k < 4; ++k) {  // dv d_c^*, c = k & 1
      const T dr = d[2 * (k & 1)], di = d[2 * (k & 1) + 1];
      o[k] += e[k] * dr + e[4 + k] * di;
      o[4 + k] += e[4 + k] * dr - e[k] * di;
    }
    T xr = T(0), xi = T(0);  // sum_a U_a1 conj(dv_a1), entries 1 and 3
    for (int k = 1; k < 4; k += 2) {
      xr += g[k] * e[k] + g[4 + k] * e[4 + k];
      xi += g[4 + k] * e[k] - g[k] * e[4 + k];
    }
    dphi[q] = -(d[2] * xi + d[3] * xr);
    if (q == 0) {
      const T* v = vg;
      for (int k = 0; k < 4; ++k) dphi[n] -= v[4 + k] * e[k] - v[k] * e[4 + k];
    }
  }
  const T* m = p.pmap + r * F * n1;
  for (int64_t f = 0; f < F; ++f) {
    T sum = T(0);
    for (int64_t q = 0; q < n1; ++q) sum += dphi[q] * m[f * n1 + q];
    ga[f] += sum;
  }
  for (int64_t q = 0; q < n1; ++q) go[q] += dphi[q];
}

template <typename T, int VB>
QLAM_INLINE void factored_forward_tasks(const FPlan<T>& p, int64_t begin, int64_t end, int thr) {
  const int64_t N = p.N, L = p.L, H = p.H, R = p.R, G = p.G;
  T* z = p.scratch + thr * p.scratch_size;  // the state [re | im]
  T* u = z + 2 * N;                          // rotated, then through the gates
  T* cs = u + 2 * N;                         // cos, sin
  T* row = cs + 2 * N;                       // the expanded phases (with pmap)
  const WireScratch<T> w(row + N);           // per wire
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / p.B, b = task % p.B;
    std::memcpy(z, p.state_in + (b * H + h) * 2 * N, 2 * N * sizeof(T));
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t r = 0; r < R; ++r) {
        const T* gt = p.gates + (h * R + r) * (G + FLOW) * 8;
        if (p.wire) {  // the phases in the gates; the state in place, then scattered into u
          wire_phases<T>(p, b, t, h, r, w.al, w.cs);
          wire_gates<T>(gt, w.cs, G + FLOW, w.vg);
          for (int k = 0; k < FLOW; ++k)
            lane_coeffs<T>(w.vg + (G + k) * 8, (FK / 2) >> k, false, w.lp + k * LANE_PLANES);
          for (int64_t q = 0; q < G; ++q) gate_apply<T>(z, z + N, w.vg + q * 8, N, N >> (q + 1));
          low_apply<T, VB>(z, z + N, w.lp, p.inv + r * N, u, u + N, N);
          std::swap(z, u);
          continue;
        }
        sincos_row<T>(factored_phases<T>(p, b, t, h, r, row), cs, cs + N, N);
        rotate_row<T>(z, cs, cs + N, u, N);
        for (int64_t q = 0; q < G; ++q) gate_apply<T>(u, u + N, gt + q * 8, N, N >> (q + 1));
        low_apply<T, VB>(u, u + N, p.lanes + (h * R + r) * FLOW * LANE_PLANES, p.inv + r * N, z,
                         z + N, N);
      }
      if (p.renorm > 0 && (t + 1) % p.renorm == 0) {
        T sq = T(0);
        for (int64_t k = 0; k < 2 * N; ++k) sq += z[k] * z[k];
        const T scale = T(1) / std::sqrt(sq);
        for (int64_t k = 0; k < 2 * N; ++k) z[k] *= scale;
      }
      T* out = p.probs + ((b * L + t) * H + h) * N;
      for (int64_t k = 0; k < N; ++k) out[k] = z[k] * z[k] + z[N + k] * z[N + k];
    }
    std::memcpy(p.state_out + (b * H + h) * 2 * N, z, 2 * N * sizeof(T));
  }
}

template <typename T, int VB>
QLAM_INLINE void factored_backward_tasks(const FPlan<T>& p, int64_t begin, int64_t end,
                                         int thr) {
  const int64_t N = p.N, L = p.L, H = p.H, R = p.R, G = p.G;
  T* z = p.scratch + thr * p.scratch_size;  // the state after the layer, and its adjoint
  T* a = z + 2 * N;
  T* u = a + 2 * N;  // before M (then before the gates), and its adjoint
  T* g = u + 2 * N;
  T* cs = g + 2 * N;
  T* row = cs + 2 * N;  // the expanded phases and their gradient (with pmap)
  T* grow = row + N;
  const WireScratch<T> w(grow + N);  // per wire
  // the offset's gradient in acc (with pmap)
  const int64_t goff = p.wire ? 8 * (G + FLOW) : 8 * G + FLOW * LANE_PLANES;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / p.B, b = task % p.B;
    T* acc = p.acc + (static_cast<int64_t>(thr) * H + h) * R * p.acc_size;
    std::memcpy(z, p.state_in + (b * H + h) * 2 * N, 2 * N * sizeof(T));
    if (p.adj_in != nullptr)
      std::memcpy(a, p.adj_in + (b * H + h) * 2 * N, 2 * N * sizeof(T));
    else
      std::fill(a, a + 2 * N, T(0));
    for (int64_t t = L - 1; t >= 0; --t) {
      if (p.gprobs != nullptr) {
        const T* gp = p.gprobs + ((b * L + t) * H + h) * N;
        for (int64_t k = 0; k < N; ++k) {
          a[k] += T(2) * z[k] * gp[k];
          a[N + k] += T(2) * z[N + k] * gp[k];
        }
      }
      const bool mapped = p.pmap != nullptr;  // ga is null with a map of no angles (F = 0)
      T* ga = mapped ? p.gphase + ((b * L + t) * H + h) * p.F : nullptr;
      if (mapped) std::fill(ga, ga + p.F, T(0));
      for (int64_t r = R - 1; r >= 0; --r) {
        T* ar = acc + r * p.acc_size;
        const T* gt = p.gates + (h * R + r) * (G + FLOW) * 8;
        if (p.wire) {  // this token's gates V, their gradients dv, then back to U and phases
          wire_phases<T>(p, b, t, h, r, w.al, w.cs);
          wire_gates<T>(gt, w.cs, G + FLOW, w.vg);
          for (int k = 0; k < FLOW; ++k)
            lane_coeffs<T>(w.vg + (G + k) * 8, (FK / 2) >> k, true, w.lp + k * LANE_PLANES);
          clear<T, VB>(w.dv, roundup(8 * (G + FLOW), FK));
          clear<T, VB>(w.le, FLOW * LANE_PLANES);
          low_unapply<T, VB>(z, z + N, a, a + N, w.lp, p.inv + r * N, u, u + N, g, g + N, w.le,
                             N);
          for (int64_t q = G - 1; q >= 0; --q)
            gate_unapply<T, VB>(u, u + N, g, g + N, w.vg + q * 8, w.dv + q * 8, N, N >> (q + 1));
          low_sums<T, VB>(w.le, w.dv + G * 8);
          wire_grads<T>(p, r, gt, w.vg, w.cs, w.dv, ar, ga, ar + goff);
          std::swap(z, u);
          std::swap(a, g);
          continue;
        }
        low_unapply<T, VB>(z, z + N, a, a + N, p.lanes + (h * R + r) * FLOW * LANE_PLANES,
                           p.inv + r * N, u, u + N, g, g + N, ar + 8 * G, N);
        for (int64_t q = G - 1; q >= 0; --q)
          gate_unapply<T, VB>(u, u + N, g, g + N, gt + q * 8, ar + q * 8, N, N >> (q + 1));
        sincos_row<T>(factored_phases<T>(p, b, t, h, r, row), cs, cs + N, N);
        T* gph = mapped ? grow : p.gphase + (((b * L + t) * H + h) * R + r) * N;
        unrotate_step<T>(u, g, cs, cs + N, z, a, gph, N);
        if (mapped) factored_phase_grads<T>(p, r, gph, ga, ar + goff);
      }
    }
    std::memcpy(p.adj_out + (b * H + h) * 2 * N, a, 2 * N * sizeof(T));
  }
}

// ------------------------------------------------------------------------------------------
// ISA variants. Each entry point is compiled for its target; the templates above are
// always_inline, so their code is generated with the caller's instruction set.
enum Isa { ISA_BASE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

struct IsaShape {
  int mr, nr_bytes;  // micro-kernel rows; panel width in bytes (NV * VB)
};

constexpr IsaShape kShapes[3] = {{4, 32}, {6, 64}, {8, 128}};

#define QLAM_DEFINE_VARIANT(NAME, TARGET, VB, MR, NV)                                      \
  TARGET void NAME##_fwd_f(const Plan<float>& p, int64_t b, int64_t e, int t) {           \
    forward_tasks<float, VB, MR, NV>(p, b, e, t);                                          \
  }                                                                                        \
  TARGET void NAME##_fwd_d(const Plan<double>& p, int64_t b, int64_t e, int t) {          \
    forward_tasks<double, VB, MR, NV>(p, b, e, t);                                         \
  }                                                                                        \
  TARGET void NAME##_bwd_f(const Plan<float>& p, int64_t b, int64_t e, int t) {           \
    backward_tasks<float, VB, MR, NV>(p, b, e, t);                                         \
  }                                                                                        \
  TARGET void NAME##_bwd_d(const Plan<double>& p, int64_t b, int64_t e, int t) {          \
    backward_tasks<double, VB, MR, NV>(p, b, e, t);                                        \
  }                                                                                        \
  TARGET void NAME##_ffwd_f(const FPlan<float>& p, int64_t b, int64_t e, int t) {         \
    factored_forward_tasks<float, VB>(p, b, e, t);                                         \
  }                                                                                        \
  TARGET void NAME##_ffwd_d(const FPlan<double>& p, int64_t b, int64_t e, int t) {        \
    factored_forward_tasks<double, VB>(p, b, e, t);                                        \
  }                                                                                        \
  TARGET void NAME##_fbwd_f(const FPlan<float>& p, int64_t b, int64_t e, int t) {         \
    factored_backward_tasks<float, VB>(p, b, e, t);                                        \
  }                                                                                        \
  TARGET void NAME##_fbwd_d(const FPlan<double>& p, int64_t b, int64_t e, int t) {        \
    factored_backward_tasks<double, VB>(p, b, e, t);                                       \
  }

QLAM_DEFINE_VARIANT(base, , 16, 4, 2)
#if defined(__x86_64__)
#define QLAM_HAVE_X86 1
QLAM_DEFINE_VARIANT(avx2, __attribute__((target("avx2,fma"))), 32, 6, 2)
QLAM_DEFINE_VARIANT(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))),
                    64, 8, 2)
#else
#define QLAM_HAVE_X86 0
#endif

template <typename T>
using TaskFn = void (*)(const Plan<T>&, int64_t, int64_t, int);

template <typename T>
using FTaskFn = void (*)(const FPlan<T>&, int64_t, int64_t, int);

template <typename T>
struct Fns {
  TaskFn<T> fwd, bwd;
  FTaskFn<T> ffwd, fbwd;  // the gate-factored scan
};

Fns<float> fns_f(int isa) {
#if QLAM_HAVE_X86
  if (isa == ISA_AVX512) return {avx512_fwd_f, avx512_bwd_f, avx512_ffwd_f, avx512_fbwd_f};
  if (isa == ISA_AVX2) return {avx2_fwd_f, avx2_bwd_f, avx2_ffwd_f, avx2_fbwd_f};
#endif
  (void)isa;
  return {base_fwd_f, base_bwd_f, base_ffwd_f, base_fbwd_f};
}

Fns<double> fns_d(int isa) {
#if QLAM_HAVE_X86
  if (isa == ISA_AVX512) return {avx512_fwd_d, avx512_bwd_d, avx512_ffwd_d, avx512_fbwd_d};
  if (isa == ISA_AVX2) return {avx2_fwd_d, avx2_bwd_d, avx2_ffwd_d, avx2_fbwd_d};
#endif
  (void)isa;
  return {base_fwd_d, base_bwd_d, base_ffwd_d, base_fbwd_d};
}

template <typename T>
Fns<T> fns(int isa);
template <>
Fns<float> fns<float>(int isa) { return fns_f(isa); }
template <>
Fns<double> fns<double>(int isa) { return fns_d(isa); }

int best_isa() {
#if QLAM_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
    return ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
  return ISA_BASE;
}

int g_isa = -1;  // chosen ISA; -1: not yet detected

int current_isa() {
  if (g_isa < 0) g_isa = best_isa();
  return g_isa;
}

const char* isa_names[3] = {"base", "avx2", "avx512"};

std::string get_isa() { return isa_names[current_isa()]; }

// Select an instruction set ("base", "avx2", "avx512" or "auto"); one the CPU lacks is refused.
std::string set_isa(const std::string& name) {
  if (name == "auto") {
    g_isa = best_isa();
    return get_isa();
  }
  int want = -1;
  for (int i = 0; i < 3; ++i)
    if (name == isa_names[i]) want = i;
  TORCH_CHECK(want >= 0, "unknown ISA '", name, "' (base, avx2, avx512, auto)");
  TORCH_CHECK(want <= best_isa(), "this CPU does not support ", name, " (best: ",
              isa_names[best_isa()], ")");
  g_isa = want;
  return get_isa();
}

// ------------------------------------------------------------------------------------------
// Host-side helpers.

// A large output is written row by row from several threads; backing it with transparent huge
// pages (where the kernel allows them on request) saves a page fault per 4 KiB on first
// touch, a sizeable share of the time at small N. Advisory only.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(sizes, opts);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t{1} << 21;
  const size_t bytes = t.numel() * t.element_size();
  if (bytes >= 2 * huge) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t b = (start + huge - 1) & ~(huge - 1), e = (start + bytes) & ~(huge - 1);
    if (e > b) (void)madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
  }
#endif
  return t;
}

bool g_gauss = true;  // use the three-GEMM complex product where N allows it

// Pack the complex matrix C = P + iQ of each (N x N) [re, im] matrix w (count of them) for
// row-vector products: FORWARD C = W^T (P = re^T, Q = im^T); else C = conj(W) (P = re,
// Q = -im). The loops walk 16 x 16 blocks of (k, j), so the transposed reads of the forward
// stay in cache. Packing is per call, O(N^2): it matters only for very short sequences at
// large n.
template <typename T>
void pack(const Plan<T>& p, const T* w, int64_t count, bool forward, T* out) {
  constexpr int64_t BS = 16;
  const int64_t N = p.N, NR = p.NR, sh = __builtin_ctzll(NR);  // NR is a power of two
  const bool real_form = !p.gauss;
  const int64_t K = real_form ? 2 * N : N;  // rows of a panel
  for (int64_t c = 0; c < count; ++c) {
    const T* re = w + c * 2 * N * N;
    const T* im = re + N * N;
    T* dst = out + c * p.pack_size;
    // element (row kk, column jj) of a matrix in panels of NR columns, K rows each
    auto at = [&](int64_t kk, int64_t jj) -> T& {
      return dst[(((jj >> sh) * K + kk) << sh) + (jj & (NR - 1))];
    };
    if (real_form)  // [[P, Q], [-Q, P]] (2N x 2N) in panels of NR columns; padding is zero
      std::fill(dst, dst + p.pack_size, T(0));
    for (int64_t k0 = 0; k0 < N; k0 += BS)
      for (int64_t j0 = 0; j0 < N; j0 += BS)
        for (int64_t k = k0; k < std::min(k0 + BS, N); ++k)
          for (int64_t j = j0; j < std::min(j0 + BS, N); ++j) {
            const T P = forward ? re[j * N + k] : re[k * N + j];
            const T Q = forward ? im[j * N + k] : -im[k * N + j];
            if (real_form) {
              at(k, j) = P;
              at(k, N + j) = Q;
              at(N + k, j) = -Q;
              at(N + k, N + j) = P;
            } else {  // P, Q, P + Q (N x N each)
              T& e = at(k, j);
              (&e)[0] = P;
              (&e)[N * N] = Q;
              (&e)[2 * N * N] = P + Q;
            }
          }
  }
}

// Sum the per-thread accumulators (nthr, count, acc_size) and turn them into the gradient of
// the (count, 2, N, N) [re, im] matrices W, for C = W^T: dRe W = dP^T, dIm W = dQ^T. One pass
// over 16 x 16 blocks: the thread sum, the real-form / Gauss combination and the transpose.
template <typename T>
at::Tensor reduce_grad(const Plan<T>& p, const at::Tensor& acc, int64_t count) {
  constexpr int64_t BS = 16;
  const int64_t N = p.N, Ma = p.Ma, nthr = acc.size(0);
  at::Tensor g = at::empty({count, 2, N, N}, acc.options());
  const T* a = acc.data_ptr<T>();
  T* out = g.data_ptr<T>();
  const int64_t stride = count * p.acc_size;  // between threads
  auto sum = [&](const T* ac, int64_t idx) {
    T v = ac[idx];
    for (int64_t t = 1; t < nthr; ++t) v += ac[t * stride + idx];
    return v;
  };
  for (int64_t c = 0; c < count; ++c) {
    const T* ac = a + c * p.acc_size;
    T* gre = out + c * 2 * N * N;
    T* gim = gre + N * N;
    for (int64_t j0 = 0; j0 < N; j0 += BS)
      for (int64_t k0 = 0; k0 < N; k0 += BS)
        for (int64_t j = j0; j < std::min(j0 + BS, N); ++j)
          for (int64_t k = k0; k < std::min(k0 + BS, N); ++k) {
            T dp, dq;
            if (!p.gauss) {
              const int64_t P = p.P;
              dp = sum(ac, k * P + j) + sum(ac, (N + k) * P + N + j);
              dq = sum(ac, k * P + N + j) - sum(ac, (N + k) * P + j);
            } else {
              const T a1 = sum(ac, k * N + j), a2 = sum(ac, Ma * N + k * N + j),
                      a3 = sum(ac, 2 * Ma * N + k * N + j);
              dp = a1 + a2;
              dq = a3 - a1 + a2;
            }
            gre[j * N + k] = dp;
            gim[j * N + k] = dq;
          }
  }
  return g;
}

// Zero-filled per-thread gradient accumulators, large ones backed by huge pages (see
// empty_output): 3 N^2 per matrix and thread, 200 MB at n = 12.
at::Tensor zeros_acc(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return empty_output(sizes, opts).zero_();
}

template <typename T>
Plan<T> make_plan(int64_t B, int64_t L, int64_t H, int64_t R, int64_t N, int isa) {
  return plan_layout<T>(B, L, H, R, N, kShapes[isa].mr,
                        kShapes[isa].nr_bytes / static_cast<int64_t>(sizeof(T)), g_gauss,
                        at::get_num_threads());
}

using OptT = c10::optional<at::Tensor>;

bool given(const OptT& t) { return t.has_value() && t->defined(); }

// The optional phase maps of a scan (see Plan): phase_map (R, F, N) with phase_offset (R, N),
// read_map (Fr, N) with read_offset (N); with a map, the phases it expands arrive as angles.
struct Maps {
  OptT phase_map, phase_offset, read_map, read_offset;
};

// (B, L, H, R, N) of a scan: batch, tokens and heads from phases, layers and N from w.
struct Dims {
  int64_t B, L, H, R, N;
};

Dims check_inputs(const at::Tensor& psi0, const at::Tensor& phases, const at::Tensor& w,
                  const OptT& read_phases, const OptT& w_read, const Maps& maps) {
  TORCH_CHECK(w.dim() == 5 && w.size(2) == 2 && w.size(3) == w.size(4),
              "w must be (H, R, 2, N, N)");
  TORCH_CHECK(phases.dim() == (given(maps.phase_map) ? 4 : 5),
              given(maps.phase_map) ? "angles must be (B, L, H, F) with a phase map"
                                    : "phases must be (B, L, H, R, N)");
  const Dims d{phases.size(0), phases.size(1), phases.size(2), w.size(1), w.size(3)};
  const int64_t B = d.B, L = d.L, H = d.H, R = d.R, N = d.N;
  TORCH_CHECK(phases.scalar_type() == at::kFloat || phases.scalar_type() == at::kDouble,
              "qlam kernel: float32 or float64 only");
  TORCH_CHECK(w.size(0) == H, "w must be (H, R, 2, N, N) with H = ", H);
  TORCH_CHECK(given(maps.phase_map) == given(maps.phase_offset),
              "phase_map and phase_offset must be given together");
  TORCH_CHECK(given(maps.read_map) == given(maps.read_offset),
              "read_map and read_offset must be given together");
  std::vector<const at::Tensor*> all{&psi0, &phases, &w};
  if (given(maps.phase_map)) {
    TORCH_CHECK(maps.phase_map->sizes() == at::IntArrayRef({R, phases.size(3), N}),
                "phase_map must be (R, F, N) = (", R, ", ", phases.size(3), ", ", N, ")");
    TORCH_CHECK(maps.phase_offset->sizes() == at::IntArrayRef({R, N}),
                "phase_offset must be (R, N) = (", R, ", ", N, ")");
    all.insert(all.end(), {&*maps.phase_map, &*maps.phase_offset});
  } else {
    TORCH_CHECK(phases.size(3) == R && phases.size(4) == N, "phases must be (B, L, H, R, N)");
  }
  TORCH_CHECK(psi0.sizes() == at::IntArrayRef({B, H, 2, N}), "psi0 must be (B, H, 2, N)");
  TORCH_CHECK(read_phases.has_value() == w_read.has_value(),
              "read_phases and w_read must be given together");
  TORCH_CHECK(!given(maps.read_map) || read_phases.has_value(),
              "read_map needs read_phases (the read angles)");
  if (read_phases.has_value()) {
    const int64_t Fr = given(maps.read_map) ? maps.read_map->size(0) : N;
    TORCH_CHECK(read_phases->sizes() == at::IntArrayRef({B, L, H, Fr}),
                given(maps.read_map) ? "read angles must be (B, L, H, Fr)"
                                     : "read_phases must be (B, L, H, N)");
    TORCH_CHECK(w_read->sizes() == at::IntArrayRef({H, 2, N, N}), "w_read must be (H, 2, N, N)");
    all.insert(all.end(), {&*read_phases, &*w_read});
    if (given(maps.read_map)) {
      TORCH_CHECK(maps.read_map->dim() == 2 && maps.read_map->size(1) == N,
                  "read_map must be (Fr, N) with N = ", N);
      TORCH_CHECK(maps.read_offset->sizes() == at::IntArrayRef({N}), "read_offset must be (N)");
      all.insert(all.end(), {&*maps.read_map, &*maps.read_offset});
    }
  }
  for (const at::Tensor* t : all) {
    TORCH_CHECK(t->scalar_type() == phases.scalar_type(),
                "qlam kernel: all tensors must share one dtype");
    TORCH_CHECK(t->device().is_cpu(), "qlam kernel: CPU tensors only");
  }
  return d;
}

// The maps in the kernel's layout (pmap (F, R N) and its transpose, the others contiguous),
// kept alive by the caller, their pointers set in p.
template <typename T>
std::vector<at::Tensor> set_maps(Plan<T>& p, const Maps& maps) {
  std::vector<at::Tensor> keep;
  auto hold = [&keep](at::Tensor t) -> const T* {
    keep.push_back(t.contiguous());
    return keep.back().data_ptr<T>();
  };
  auto padded_t = [](const at::Tensor& m) {  // (F, W) -> (W, roundup(F, AB)), zero-padded
    return at::constant_pad_nd(m.t(), {0, roundup(m.size(0), AB) - m.size(0)});
  };
  if (given(maps.phase_map)) {
    const at::Tensor m = maps.phase_map->permute({1, 0, 2}).reshape({maps.phase_map->size(1), -1});
    p.F = m.size(0);
    p.pmap = hold(m);
    p.pmap_t = hold(padded_t(m));
    p.poff = hold(*maps.phase_offset);
  }
  if (given(maps.read_map)) {
    p.Fr = maps.read_map->size(0);
    p.rmap = hold(*maps.read_map);
    p.rmap_t = hold(padded_t(*maps.read_map));
    p.roff = hold(*maps.read_offset);
  }
  return keep;
}

// state tensor (B, H, 2, N) -> tiles (H, ntile, Bt, P) (rows beyond B and columns beyond 2N
// are zero) and back
template <typename T>
void to_tiles(const Plan<T>& p, const T* src, T* dst) {
  const int64_t N = p.N;
  for (int64_t h = 0; h < p.H; ++h)
    for (int64_t b = 0; b < p.B; ++b) {
      const int64_t tile = b / p.Bt, i = b % p.Bt;
      std::memcpy(dst + ((h * p.ntile + tile) * p.Bt + i) * p.P, src + (b * p.H + h) * 2 * N,
                  2 * N * sizeof(T));
    }
}

template <typename T>
void from_tiles(const Plan<T>& p, const T* src, T* dst) {
  const int64_t N = p.N;
  for (int64_t h = 0; h < p.H; ++h)
    for (int64_t b = 0; b < p.B; ++b) {
      const int64_t tile = b / p.Bt, i = b % p.Bt;
      std::memcpy(dst + (b * p.H + h) * 2 * N, src + ((h * p.ntile + tile) * p.Bt + i) * p.P,
                  2 * N * sizeof(T));
    }
}

template <typename T, typename F>
void run_tasks(const Plan<T>& p, F fn) {
  at::parallel_for(0, p.H * p.ntile, 1, [&](int64_t begin, int64_t end) {
    fn(p, begin, end, at::get_thread_num());
  });
}

template <typename T>
std::vector<at::Tensor> forward_impl(const Dims& d, const at::Tensor& psi0_,
                                     const at::Tensor& phases_, const at::Tensor& w_,
                                     const OptT& read_phases, const OptT& w_read,
                                     int64_t renorm_every, const Maps& maps) {
  const at::Tensor psi0 = psi0_.contiguous(), phases = phases_.contiguous(), w = w_.contiguous();
  const int64_t B = d.B, L = d.L, H = d.H, R = d.R, N = d.N;
  const int isa = current_isa();
  Plan<T> p = make_plan<T>(B, L, H, R, N, isa);
  const std::vector<at::Tensor> keep_maps = set_maps<T>(p, maps);
  p.renorm = renorm_every;
  const bool has_read = read_phases.has_value();
  const auto opts = phases.options();

  at::Tensor wpack = empty_output({H * R * p.pack_size}, opts);
  pack<T>(p, w.data_ptr<T>(), H * R, true, wpack.data_ptr<T>());
  p.wpack = wpack.data_ptr<T>();
  at::Tensor rpack, rph;
  if (has_read) {
    const at::Tensor wr = w_read->contiguous();
    rph = read_phases->contiguous();
    rpack = empty_output({H * p.pack_size}, opts);
    pack<T>(p, wr.data_ptr<T>(), H, true, rpack.data_ptr<T>());
    p.rpack = rpack.data_ptr<T>();
    p.read_phases = rph.data_ptr<T>();
  }
  at::Tensor Z = at::zeros({H, p.ntile, p.Bt, p.P}, opts);
  to_tiles<T>(p, psi0.data_ptr<T>(), Z.data_ptr<T>());
  p.Z = Z.data_ptr<T>();
  at::Tensor probs = empty_output({B, L, H, N}, opts);
  p.probs = probs.data_ptr<T>();
  p.phases = phases.data_ptr<T>();

  const int64_t nthr = at::get_num_threads();
  p.scratch_size = forward_scratch(p);
  at::Tensor scratch = at::empty({nthr * p.scratch_size}, opts);
  p.scratch = scratch.data_ptr<T>();
  run_tasks<T>(p, fns<T>(isa).fwd);

  at::Tensor last = at::empty({B, H, 2, N}, opts);
  from_tiles<T>(p, p.Z, last.data_ptr<T>());
  return {probs, last};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const Dims& d, const at::Tensor& last_,
                                      const at::Tensor& phases_, const at::Tensor& w_,
                                      const OptT& read_phases, const OptT& w_read,
                                      const OptT& g_probs, const OptT& g_last, const Maps& maps) {
  const at::Tensor last = last_.contiguous(), phases = phases_.contiguous(), w = w_.contiguous();
  const int64_t B = d.B, L = d.L, H = d.H, R = d.R, N = d.N;
  const int isa = current_isa();
  Plan<T> p = make_plan<T>(B, L, H, R, N, isa);
  const std::vector<at::Tensor> keep_maps = set_maps<T>(p, maps);
  const bool has_read = read_phases.has_value();
  const bool has_gp = g_probs.has_value() && g_probs->defined();
  const auto opts = phases.options();
  const int64_t nthr = at::get_num_threads();

  // the walk multiplies by conj(W) (the inverse); the read basis needs W_read^T (to rebuild v)
  // and conj(W_read) (for g_u)
  at::Tensor wpack = empty_output({H * R * p.pack_size}, opts);
  pack<T>(p, w.data_ptr<T>(), H * R, false, wpack.data_ptr<T>());
  p.wpack = wpack.data_ptr<T>();
  at::Tensor rpack, rbpack, rph, grphase, gwr;
  if (has_read) {
    const at::Tensor wr = w_read->contiguous();
    rph = read_phases->contiguous();
    rpack = empty_output({H * p.pack_size}, opts);
    rbpack = empty_output({H * p.pack_size}, opts);
    pack<T>(p, wr.data_ptr<T>(), H, true, rpack.data_ptr<T>());
    pack<T>(p, wr.data_ptr<T>(), H, false, rbpack.data_ptr<T>());
    p.rpack = rpack.data_ptr<T>();
    p.rbpack = rbpack.data_ptr<T>();
    p.read_phases = rph.data_ptr<T>();
    grphase = has_gp ? empty_output({B, L, H, p.Fr}, opts) : at::zeros({B, L, H, p.Fr}, opts);
    p.grphase = grphase.data_ptr<T>();
    gwr = zeros_acc({nthr, H, p.acc_size}, opts);
    p.gwr = gwr.data_ptr<T>();
  }
  at::Tensor gp;
  if (has_gp) {
    gp = g_probs->contiguous();
    p.gprobs = gp.data_ptr<T>();
  }
  at::Tensor Z = at::zeros({H, p.ntile, p.Bt, p.P}, opts);
  at::Tensor A = at::zeros({H, p.ntile, p.Bt, p.P}, opts);
  to_tiles<T>(p, last.data_ptr<T>(), Z.data_ptr<T>());
  if (g_last.has_value() && g_last->defined()) {
    const at::Tensor gl = g_last->contiguous();
    to_tiles<T>(p, gl.data_ptr<T>(), A.data_ptr<T>());
  }
  p.Z = Z.data_ptr<T>();
  p.A = A.data_ptr<T>();
  p.phases = phases.data_ptr<T>();
  at::Tensor gphase = empty_output(phases.sizes(), opts);
  p.gphase = gphase.data_ptr<T>();
  at::Tensor gw = zeros_acc({nthr, H * R, p.acc_size}, opts);
  p.gw = gw.data_ptr<T>();
  p.scratch_size = backward_scratch(p);
  at::Tensor scratch = at::empty({nthr * p.scratch_size}, opts);
  p.scratch = scratch.data_ptr<T>();
  run_tasks<T>(p, fns<T>(isa).bwd);

  at::Tensor g_psi0 = at::empty({B, H, 2, N}, opts);
  from_tiles<T>(p, p.A, g_psi0.data_ptr<T>());
  at::Tensor g_w = reduce_grad<T>(p, gw, H * R).view({H, R, 2, N, N});
  at::Tensor g_read_phases, g_w_read;
  if (has_read) {
    g_read_phases = grphase;
    g_w_read = reduce_grad<T>(p, gwr, H);
  }
  return {g_psi0, gphase, g_w, g_read_phases, g_w_read};
}

// The incoming gradients of a backward: g_probs (B, L, H, N) and g_last like the final state.
void check_grads(const at::Tensor& last, const at::Tensor& phases, int64_t N,
                 const OptT& g_probs, const OptT& g_last) {
  if (given(g_probs))
    TORCH_CHECK(g_probs->sizes() == at::IntArrayRef({phases.size(0), phases.size(1),
                                                     phases.size(2), N}) &&
                    g_probs->scalar_type() == phases.scalar_type(),
                "g_probs must be (B, L, H, N) of the inputs' dtype");
  if (given(g_last))
    TORCH_CHECK(g_last->sizes() == last.sizes() && g_last->scalar_type() == last.scalar_type(),
                "g_last must match the final state");
}

std::vector<at::Tensor> forward(const at::Tensor& psi0, const at::Tensor& phases,
                                const at::Tensor& w, const OptT& read_phases, const OptT& w_read,
                                int64_t renorm_every, const OptT& phase_map,
                                const OptT& phase_offset, const OptT& read_map,
                                const OptT& read_offset) {
  const Maps maps{phase_map, phase_offset, read_map, read_offset};
  const Dims d = check_inputs(psi0, phases, w, read_phases, w_read, maps);
  TORCH_CHECK(renorm_every >= 0, "renorm_every must be >= 0 (0: never)");
  if (phases.scalar_type() == at::kDouble)
    return forward_impl<double>(d, psi0, phases, w, read_phases, w_read, renorm_every, maps);
  return forward_impl<float>(d, psi0, phases, w, read_phases, w_read, renorm_every, maps);
}

std::vector<at::Tensor> backward(const at::Tensor& last, const at::Tensor& phases,
                                 const at::Tensor& w, const OptT& read_phases, const OptT& w_read,
                                 const OptT& g_probs, const OptT& g_last, const OptT& phase_map,
                                 const OptT& phase_offset, const OptT& read_map,
                                 const OptT& read_offset) {
  const Maps maps{phase_map, phase_offset, read_map, read_offset};
  const Dims d = check_inputs(last, phases, w, read_phases, w_read, maps);
  check_grads(last, phases, d.N, g_probs, g_last);
  if (phases.scalar_type() == at::kDouble)
    return backward_impl<double>(d, last, phases, w, read_phases, w_read, g_probs, g_last, maps);
  return backward_impl<float>(d, last, phases, w, read_phases, w_read, g_probs, g_last, maps);
}

// ------------------------------------------------------------------------------------------
// Host side of the gate-factored scan (factored_forward_tasks / factored_backward_tasks).
// gates (H, R, n, 2, 2, 2) [re, im] planes, n >= FLOW; inv (R, N) the inverse permutations.
// With phase_map (R, F, N) and phase_offset (R, N), phases are the angles (B, L, H, F); with
// phase_map (R, F, n + 1) and phase_offset (R, n + 1) the phases are separable, given per
// wire (wire_phases).
void check_factored(const at::Tensor& state, const at::Tensor& phases, const at::Tensor& gates,
                    const at::Tensor& inv, const OptT& phase_map, const OptT& phase_offset) {
  const bool mapped = given(phase_map);
  TORCH_CHECK(mapped == given(phase_offset), "phase_map and phase_offset must be given together");
  TORCH_CHECK(phases.dim() == (mapped ? 4 : 5),
              mapped ? "angles must be (B, L, H, F) with a phase map"
                     : "phases must be (B, L, H, R, N)");
  TORCH_CHECK(gates.dim() == 6 && state.dim() == 4, "gates must be (H, R, n, 2, 2, 2) and the "
              "state (B, H, 2, N)");
  const int64_t B = phases.size(0), H = phases.size(2), R = gates.size(1), N = state.size(3);
  TORCH_CHECK(phases.scalar_type() == at::kFloat || phases.scalar_type() == at::kDouble,
              "qlam kernel: float32 or float64 only");
  TORCH_CHECK(N >= FK && (N & (N - 1)) == 0, "the factored kernel needs N = 2^n >= ", FK);
  const int64_t n = __builtin_ctzll(N);
  if (!mapped)
    TORCH_CHECK(phases.size(3) == R && phases.size(4) == N, "phases must be (B, L, H, R, N) = (",
                B, ", ", phases.size(1), ", ", H, ", ", R, ", ", N, ")");
  TORCH_CHECK(state.sizes() == at::IntArrayRef({B, H, 2, N}), "state must be (B, H, 2, N)");
  TORCH_CHECK(gates.sizes() == at::IntArrayRef({H, R, n, 2, 2, 2}), "gates must be (H, R, ", n,
              ", 2, 2, 2)");
  TORCH_CHECK(inv.sizes() == at::IntArrayRef({R, N}) && inv.scalar_type() == at::kLong,
              "inv must be (R, N) int64");
  std::vector<const at::Tensor*> all{&state, &phases, &gates};
  if (mapped) {
    const int64_t W = phase_map->dim() == 3 ? phase_map->size(2) : -1;  // N, or n + 1 per wire
    TORCH_CHECK((W == N || W == n + 1) &&
                    phase_map->sizes() == at::IntArrayRef({R, phases.size(3), W}),
                "phase_map must be (R, F, N) = (", R, ", ", phases.size(3), ", ", N,
                ") or per wire (R, F, n + 1) = (", R, ", ", phases.size(3), ", ", n + 1, ")");
    TORCH_CHECK(W == N || n + 1 <= WIRE_PAD, "per-wire phase maps take at most ", WIRE_PAD - 1,
                " qubits");
    TORCH_CHECK(phase_offset->sizes() == at::IntArrayRef({R, W}), "phase_offset must be (R, ",
                W == N ? "N" : "n + 1", ") = (", R, ", ", W, ") like phase_map");
    all.insert(all.end(), {&*phase_map, &*phase_offset});
  }
  TORCH_CHECK(inv.device().is_cpu(), "qlam kernel: CPU tensors only");
  for (const at::Tensor* t : all) {
    TORCH_CHECK(t->device().is_cpu(), "qlam kernel: CPU tensors only");
    TORCH_CHECK(t->scalar_type() == phases.scalar_type(),
                "qlam kernel: all tensors must share one dtype");
  }
  const at::Tensor sorted = std::get<0>(inv.sort(1));
  TORCH_CHECK(sorted.equal(at::arange(N, inv.options()).expand({R, N})),
              "inv must hold R permutations of range(N)");
}

// The low wires' coefficient planes (H, R, FLOW, LANE_PLANES) of the contiguous gates (of U^H
// with adjoint), wire n - FLOW + k on stride 8 >> k.
template <typename T>
at::Tensor lane_planes(const at::Tensor& gates, bool adjoint) {
  const int64_t H = gates.size(0), R = gates.size(1), n = gates.size(2);
  at::Tensor out = at::empty({H, R, FLOW, LANE_PLANES}, gates.options());
  const T* u = gates.data_ptr<T>();
  T* c = out.data_ptr<T>();
  for (int64_t hr = 0; hr < H * R; ++hr)
    for (int k = 0; k < FLOW; ++k)
      lane_coeffs<T>(u + (hr * n + n - FLOW + k) * 8, (FK / 2) >> k, adjoint,
                     c + (hr * FLOW + k) * LANE_PLANES);
  return out;
}

// The low wires' gradients (H, R, FLOW, 2, 2, 2) from their lane sums (H, R, FLOW,
// LANE_PLANES; lane_grad, lane_sums).
template <typename T>
at::Tensor lane_grads(const at::Tensor& sums) {
  const int64_t HR = sums.size(0) * sums.size(1);
  at::Tensor out = at::zeros({sums.size(0), sums.size(1), FLOW, 2, 2, 2}, sums.options());
  const T* e = sums.data_ptr<T>();
  T* du = out.data_ptr<T>();
  for (int64_t i = 0; i < HR; ++i)
    low_sums<T, 16>(e + i * FLOW * LANE_PLANES, du + i * FLOW * 8);
  return out;
}

// The plan of a call; the maps (when given) made contiguous and, without per-wire maps, the low
// wires' coefficient planes (of U^H with adjoint, for the backward) into keep.
template <typename T>
FPlan<T> fplan(const at::Tensor& phases, const at::Tensor& gates, bool adjoint,
               const at::Tensor& inv, const OptT& phase_map, const OptT& phase_offset,
               int64_t scratch_per_thread, std::vector<at::Tensor>& keep) {
  FPlan<T> p;
  p.B = phases.size(0);
  p.L = phases.size(1);
  p.H = phases.size(2);
  p.R = gates.size(1);
  p.N = int64_t(1) << gates.size(2);
  p.G = gates.size(2) - FLOW;
  p.phases = phases.data_ptr<T>();
  p.gates = gates.data_ptr<T>();
  p.inv = inv.data_ptr<int64_t>();
  if (given(phase_map)) {
    keep.push_back(phase_map->contiguous());
    keep.push_back(phase_offset->contiguous());
    p.F = phases.size(3);
    p.poff = keep.back().data_ptr<T>();
    // pmap marks the mapped mode; an empty map (F = 0: the phases are the offset alone, a
    // circuit without inputs) has no data pointer, so it points at the offset then (unread)
    p.pmap = p.F > 0 ? keep[keep.size() - 2].data_ptr<T>() : p.poff;
    p.wire = phase_map->size(2) != p.N;
  }
  if (!p.wire) {  // the low wires' fixed planes (per wire they are built every token)
    keep.push_back(lane_planes<T>(gates, adjoint));
    p.lanes = keep.back().data_ptr<T>();
  }
  p.scratch_size = roundup(scratch_per_thread * p.N + WIRE_SCRATCH, 64);
  return p;
}

template <typename T>
void run_ftasks(const FPlan<T>& p, FTaskFn<T> fn) {
  at::parallel_for(0, p.H * p.B, 1, [&](int64_t begin, int64_t end) {
    fn(p, begin, end, at::get_thread_num());
  });
}

template <typename T>
std::vector<at::Tensor> factored_forward_impl(const at::Tensor& psi0_, const at::Tensor& phases_,
                                              const at::Tensor& gates_, const at::Tensor& inv_,
                                              int64_t renorm_every, const OptT& phase_map,
                                              const OptT& phase_offset) {
  const at::Tensor psi0 = psi0_.contiguous(), phases = phases_.contiguous(),
                   gates = gates_.contiguous(), inv = inv_.contiguous();
  std::vector<at::Tensor> keep;
  // z, u, cos | sin, the expanded phases
  FPlan<T> p = fplan<T>(phases, gates, false, inv, phase_map, phase_offset, 7, keep);
  p.renorm = renorm_every;
  const auto opts = phases.options();
  at::Tensor probs = empty_output({p.B, p.L, p.H, p.N}, opts);
  at::Tensor last = at::empty({p.B, p.H, 2, p.N}, opts);
  at::Tensor scratch = at::empty({at::get_num_threads() * p.scratch_size}, opts);
  p.state_in = psi0.data_ptr<T>();
  p.state_out = last.data_ptr<T>();
  p.probs = probs.data_ptr<T>();
  p.scratch = scratch.data_ptr<T>();
  run_ftasks<T>(p, fns<T>(current_isa()).ffwd);
  return {probs, last};
}

template <typename T>
std::vector<at::Tensor> factored_backward_impl(const at::Tensor& last_, const at::Tensor& phases_,
                                               const at::Tensor& gates_, const at::Tensor& inv_,
                                               const OptT& g_probs, const OptT& g_last,
                                               const OptT& phase_map, const OptT& phase_offset) {
  const at::Tensor last = last_.contiguous(), phases = phases_.contiguous(),
                   gates = gates_.contiguous(), inv = inv_.contiguous();
  std::vector<at::Tensor> keep;
  // z, a, u, g, cos | sin, the expanded phases and their gradient
  FPlan<T> p = fplan<T>(phases, gates, true, inv, phase_map, phase_offset, 12, keep);
  const auto opts = phases.options();
  const int64_t nthr = at::get_num_threads();
  const int64_t n = p.G + FLOW;
  const int64_t lead = p.wire ? 8 * n : 8 * p.G + FLOW * LANE_PLANES;  // the gates' gradients
  const int64_t n_off = p.pmap == nullptr ? 0 : p.wire ? n + 1 : p.N;   // then the offset's
  p.acc_size = lead + n_off;
  at::Tensor acc = at::zeros({nthr, p.H, p.R, p.acc_size}, opts);
  at::Tensor gphase = p.pmap != nullptr ? at::empty({p.B, p.L, p.H, p.F}, opts)
                                        : empty_output({p.B, p.L, p.H, p.R, p.N}, opts);
  at::Tensor g_psi0 = at::empty({p.B, p.H, 2, p.N}, opts);
  at::Tensor scratch = at::empty({nthr * p.scratch_size}, opts);
  at::Tensor gp, gl;
  if (given(g_probs)) {
    gp = g_probs->contiguous();
    p.gprobs = gp.data_ptr<T>();
  }
  if (given(g_last)) {
    gl = g_last->contiguous();
    p.adj_in = gl.data_ptr<T>();
  }
  p.state_in = last.data_ptr<T>();
  p.adj_out = g_psi0.data_ptr<T>();
  p.gphase = gphase.data_ptr<T>();
  p.acc = acc.data_ptr<T>();
  p.scratch = scratch.data_ptr<T>();
  run_ftasks<T>(p, fns<T>(current_isa()).fbwd);
  const at::Tensor total = acc.sum(0);  // (H, R, acc_size)
  at::Tensor g_gates;
  if (p.wire) {
    g_gates = total.narrow(2, 0, 8 * n).clone().view({p.H, p.R, n, 2, 2, 2});
  } else {
    const at::Tensor low = lane_grads<T>(
        total.narrow(2, 8 * p.G, FLOW * LANE_PLANES).contiguous().view({p.H, p.R, FLOW,
                                                                        LANE_PLANES}));
    g_gates = at::cat({total.narrow(2, 0, 8 * p.G).reshape({p.H, p.R, p.G, 2, 2, 2}), low}, 2);
  }
  at::Tensor g_off = p.pmap != nullptr ? total.narrow(2, lead, n_off).sum(0)  // (R, N | n + 1)
                                       : at::empty({0}, opts);
  return {g_psi0, gphase, g_gates, g_off};
}

std::vector<at::Tensor> factored_forward(const at::Tensor& psi0, const at::Tensor& phases,
                                         const at::Tensor& gates, const at::Tensor& inv,
                                         int64_t renorm_every, const OptT& phase_map,
                                         const OptT& phase_offset) {
  check_factored(psi0, phases, gates, inv, phase_map, phase_offset);
  TORCH_CHECK(renorm_every >= 0, "renorm_every must be >= 0 (0: never)");
  if (phases.scalar_type() == at::kDouble)
    return factored_forward_impl<double>(psi0, phases, gates, inv, renorm_every, phase_map,
                                         phase_offset);
  return factored_forward_impl<float>(psi0, phases, gates, inv, renorm_every, phase_map,
                                      phase_offset);
}

std::vector<at::Tensor> factored_backward(const at::Tensor& last, const at::Tensor& phases,
                                          const at::Tensor& gates, const at::Tensor& inv,
                                          const OptT& g_probs, const OptT& g_last,
                                          const OptT& phase_map, const OptT& phase_offset) {
  check_factored(last, phases, gates, inv, phase_map, phase_offset);
  check_grads(last, phases, last.size(3), g_probs, g_last);
  if (phases.scalar_type() == at::kDouble)
    return factored_backward_impl<double>(last, phases, gates, inv, g_probs, g_last, phase_map,
                                          phase_offset);
  return factored_backward_impl<float>(last, phases, gates, inv, g_probs, g_last, phase_map,
                                       phase_offset);
}

// ------------------------------------------------------------------------------------------
// Streaming: one token of the whole QLAM layer in one call (a one-token forward without
// gradients, as QLAM.step streams; qlam.memory.layer). One GEMM gives the token's phases
// (H, R, N), read phases (H, N, with a readout basis) and query weights (H, N - 1):
// g = x w_in + b_in. Per (head, example) the state walks the R layers, is rescaled to norm 1
// (the forward's periodic renormalisation, applied every token) and is read out,
// p = |W_read (exp(i read_phases) psi)|^2; the Pauli-Z expectations p walsh times the query
// weights are the features, y = feats w_out + b_out. The matrices come transposed,
// ut[h, r, c, k, j] = W[h, r, c, j, k] (the readout's last), so every product is a sequence
// of axpys over contiguous rows.

// out = W u ([re | im] rows of width N); wt: the [re, im] planes of W^T.
template <typename T>
QLAM_INLINE void cmatvec(const T* __restrict wt, const T* __restrict u, T* __restrict out,
                         int64_t N) {
  const T* re = wt;
  const T* im = wt + N * N;
  std::fill(out, out + 2 * N, T(0));
  for (int64_t k = 0; k < N; ++k) {
    const T a = u[k], b = u[N + k];
    const T* rk = re + k * N;
    const T* ik = im + k * N;
    for (int64_t j = 0; j < N; ++j) {
      out[j] += a * rk[j] - b * ik[j];
      out[N + j] += a * ik[j] + b * rk[j];
    }
  }
}

template <typename T>
std::vector<at::Tensor> step_impl(const at::Tensor& x, const at::Tensor& psi_,
                                  const at::Tensor& w_in, const at::Tensor& b_in,
                                  const at::Tensor& ut_, const at::Tensor& walsh_,
                                  const at::Tensor& w_out, const at::Tensor& b_out, bool read) {
  const int64_t B = psi_.size(0), H = psi_.size(1), N = psi_.size(2), M = N - 1;
  const int64_t Rp = ut_.size(1), R = Rp - (read ? 1 : 0);
  const at::Tensor x2 = x.reshape({B, -1}).contiguous();
  const T* xp = x2.data_ptr<T>();
  bool finite = true;
  for (int64_t i = 0; i < x2.numel(); ++i) finite &= std::isfinite(xp[i]);
  TORCH_CHECK_VALUE(finite, "input contains NaN or inf");
  const at::Tensor g = at::addmm(b_in, x2, w_in);  // (B, F)
  const int64_t F = g.size(1), read_at = H * R * N, q_at = read_at + (read ? H * N : 0);
  TORCH_CHECK(F == q_at + H * M, "w_in must have ", q_at + H * M, " columns, got ", F);
  const at::Tensor psi = at::view_as_real(psi_.contiguous());  // (B, H, N, 2)
  const at::Tensor ut = ut_.contiguous(), walsh = walsh_.contiguous();
  at::Tensor next = at::empty({B, H, N}, psi_.options());
  at::Tensor feats = at::empty({B, H * M}, x2.options());
  const T *gp = g.data_ptr<T>(), *sp = psi.data_ptr<T>(), *up = ut.data_ptr<T>(),
          *wp = walsh.data_ptr<T>();
  T* np = at::view_as_real(next).data_ptr<T>();
  T* fp = feats.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 16384 / (Rp * N * N));
  at::parallel_for(0, H * B, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(8 * N);
    T *z = buf.data(), *u = z + 2 * N, *v = u + 2 * N, *cs = v + 2 * N;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task / B, b = task % B;
      const T* row = gp + b * F;
      const T* in = sp + (b * H + h) * 2 * N;
      for (int64_t k = 0; k < N; ++k) {
        z[k] = in[2 * k];
        z[N + k] = in[2 * k + 1];
      }
      for (int64_t r = 0; r < R; ++r) {
        sincos_row<T>(row + (h * R + r) * N, cs, cs + N, N);
        rotate_row<T>(z, cs, cs + N, u, N);
        cmatvec<T>(up + (h * Rp + r) * 2 * N * N, u, z, N);
      }
      T sq = T(0);
      for (int64_t k = 0; k < 2 * N; ++k) sq += z[k] * z[k];
      const T scale = T(1) / std::sqrt(sq);
      T* out = np + (b * H + h) * 2 * N;
      for (int64_t k = 0; k < N; ++k) {
        out[2 * k] = z[k] *= scale;
        out[2 * k + 1] = z[N + k] *= scale;
      }
      const T* o = z;
      if (read) {
        sincos_row<T>(row + read_at + h * N, cs, cs + N, N);
        rotate_row<T>(z, cs, cs + N, u, N);
        cmatvec<T>(up + (h * Rp + R) * 2 * N * N, u, v, N);
        o = v;
      }
      T* f = fp + (b * H + h) * M;
      std::fill(f, f + M, T(0));
      for (int64_t s = 0; s < N; ++s) {
        const T pz = o[s] * o[s] + o[N + s] * o[N + s];
        const T* ws = wp + s * M;
        for (int64_t j = 0; j < M; ++j) f[j] += pz * ws[j];
      }
      const T* q = row + q_at + h * M;
      for (int64_t j = 0; j < M; ++j) f[j] *= q[j];
    }
  });
  const at::Tensor y = at::addmm(b_out, feats, w_out);
  return {y.view(x.sizes()), next};
}

std::vector<at::Tensor> step(const at::Tensor& x, const at::Tensor& psi, const at::Tensor& w_in,
                             const at::Tensor& b_in, const at::Tensor& ut,
                             const at::Tensor& walsh, const at::Tensor& w_out,
                             const at::Tensor& b_out, bool read) {
  TORCH_CHECK(psi.dim() == 3 && psi.is_complex(), "psi must be (B, H, N) complex");
  const int64_t B = psi.size(0), H = psi.size(1), N = psi.size(2);
  TORCH_CHECK(x.numel() == B * w_in.size(0), "x must hold ", B, " rows of ", w_in.size(0));
  TORCH_CHECK(ut.dim() == 5 && ut.size(0) == H && ut.size(1) >= (read ? 2 : 1) &&
                  ut.size(2) == 2 && ut.size(3) == N && ut.size(4) == N,
              "ut must be (H, R', 2, N, N)");
  TORCH_CHECK(walsh.sizes() == at::IntArrayRef({N, N - 1}), "walsh must be (N, N - 1)");
  TORCH_CHECK(w_out.size(0) == H * (N - 1), "w_out must have H (N - 1) rows");
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "qlam step: float32 or float64 only");
  TORCH_CHECK(psi.scalar_type() == (dt == at::kDouble ? at::kComplexDouble : at::kComplexFloat),
              "psi must be complex of x's precision");
  for (const at::Tensor* t : {&x, &psi, &w_in, &b_in, &ut, &walsh, &w_out, &b_out}) {
    TORCH_CHECK(t->device().is_cpu(), "qlam step: CPU tensors only");
    if (t != &psi) TORCH_CHECK(t->scalar_type() == dt, "qlam step: all tensors must share x's dtype");
  }
  if (dt == at::kDouble) return step_impl<double>(x, psi, w_in, b_in, ut, walsh, w_out, b_out, read);
  return step_impl<float>(x, psi, w_in, b_in, ut, walsh, w_out, b_out, read);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "qlam: compiled quantum-memory recurrence (forward and reversible backward)";
  m.def("forward", &forward,
        "probs, last = forward(psi0, phases, w, read_phases, w_read, renorm_every, phase_map, "
        "phase_offset, read_map, read_offset); the state is rescaled to norm 1 after every "
        "renorm_every-th token (0: never); with a phase map (R, F, N) and offset (R, N), "
        "phases are the angles (B, L, H, F) it expands (read_map (Fr, N), read_offset (N): "
        "read_phases are (B, L, H, Fr) angles)",
        py::arg("psi0"), py::arg("phases"), py::arg("w"), py::arg("read_phases"),
        py::arg("w_read"), py::arg("renorm_every") = 0, py::arg("phase_map") = py::none(),
        py::arg("phase_offset") = py::none(), py::arg("read_map") = py::none(),
        py::arg("read_offset") = py::none());
  m.def("backward", &backward,
        "g_psi0, g_phases, g_w, g_read_phases, g_w_read = backward(last, phases, w, "
        "read_phases, w_read, g_probs, g_last, phase_map, phase_offset, read_map, "
        "read_offset); with maps, the phase gradients are the angles'",
        py::arg("last"), py::arg("phases"), py::arg("w"), py::arg("read_phases"),
        py::arg("w_read"), py::arg("g_probs"), py::arg("g_last"),
        py::arg("phase_map") = py::none(), py::arg("phase_offset") = py::none(),
        py::arg("read_map") = py::none(), py::arg("read_offset") = py::none());
  m.def("step", &step,
        "y, state = step(x, psi, w_in, b_in, ut, walsh, w_out, b_out, read): one token of "
        "the QLAM layer without gradients",
        py::arg("x"), py::arg("psi"), py::arg("w_in"), py::arg("b_in"), py::arg("ut"),
        py::arg("walsh"), py::arg("w_out"), py::arg("b_out"), py::arg("read"));
  m.def("factored_forward", &factored_forward,
        "probs, last = factored_forward(psi0, phases, gates, inv, renorm_every, phase_map, "
        "phase_offset): the scan with W_r = P_r (U_0 ⊗ .. ⊗ U_{n-1}), (P y)[inv[j]] = y[j]; "
        "with phase_map (R, F, N) and phase_offset (R, N), phases are the angles (B, L, H, F)",
        py::arg("psi0"), py::arg("phases"), py::arg("gates"), py::arg("inv"),
        py::arg("renorm_every") = 0, py::arg("phase_map") = py::none(),
        py::arg("phase_offset") = py::none());
  m.def("factored_backward", &factored_backward,
        "g_psi0, g_phases, g_gates, g_offset = factored_backward(last, phases, gates, inv, "
        "g_probs, g_last, phase_map, phase_offset) (g_offset (R, N) with a map, else empty)",
        py::arg("last"), py::arg("phases"), py::arg("gates"), py::arg("inv"),
        py::arg("g_probs"), py::arg("g_last"), py::arg("phase_map") = py::none(),
        py::arg("phase_offset") = py::none());
  m.def("isa", &get_isa, "the instruction set in use (base, avx2, avx512)");
  m.def("set_isa", &set_isa, "select base / avx2 / avx512 / auto; returns the one in use");
  m.def(
      "set_gauss", [](bool on) { g_gauss = on; },
      "use (True, default) or not the three-multiplication complex product where N allows");
  m.def("num_threads", []() { return at::get_num_threads(); });
}

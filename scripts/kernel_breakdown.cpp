// Where the compiled recurrence's time goes, measured without torch (float32, 1 thread; the
// AVX-512 build where the CPU has it, else the AVX2 one).
//
//     bash scripts/kernel_breakdown.sh [n [batch [tokens [layer]]]]     (default 6 128 784)
//
// With a fourth argument "layer" the whole calls are the QLAM layer's own: 8 heads, every token's
// phases expanded from 2n input angles by phase maps and its readout from n query angles
// (the layer's backward also sums the angles' gradients), instead of one head given phases.
//
// The script includes the kernel's torch-free part (src/qlam/csrc/recurrence.cpp, from
// "namespace {" to "// ISA variants") into this file, so the code timed is the kernel's own:
//   peak    the register-blocked micro-kernel alone, operands in L1: this core's FMA limit;
//   cmul    the complex product of one tile (Gauss form where N allows), repeated;
//   couter  the gradient outer product of one tile, repeated;
//   fwd/bwd the task loops of a whole call (forward_tasks / backward_tasks, one head, one layer,
//           no readout: the roofline benchmark's problem), phases uniform in [0, 2 pi); or
//           the layer's (above), its flops counting the readout's products too.
// Rates are actual flops (the Gauss form's 6 N^2 per complex product), best of several runs;
// run it on an idle core (timings of a shared core are not comparable).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#define QLAM_INLINE inline __attribute__((always_inline))
#include QLAM_KERNEL_BODY
}  // namespace

namespace {
constexpr int VB = QLAM_VB, MR = QLAM_MR, NV = 2;  // the kernel's shape of this ISA (kShapes)

// a float buffer aligned to 64 bytes, as torch allocates tensors
struct Buffer {
  std::vector<float> v;
  float* p;
  explicit Buffer(int64_t n) : v(n + 16) {
    p = v.data() + (16 - (reinterpret_cast<uintptr_t>(v.data()) / sizeof(float)) % 16) % 16;
  }
  float* begin() { return p; }
  float* end() { return p + v.size() - 16; }
  float* data() { return p; }
};

template <typename F>
double best_seconds(F fn, int repeats) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  return best;
}

void report(const char* what, double flops, double seconds, double peak) {
  std::printf("%-7s %8.3f ms  %6.1f GFLOP/s", what, seconds * 1e3, flops / seconds / 1e9);
  if (peak > 0) std::printf("  %5.1f %% of peak", 100.0 * flops / seconds / peak);
  std::printf("\n");
}
}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 6;
  const int64_t B = argc > 2 ? std::atoll(argv[2]) : 128, L = argc > 3 ? std::atoll(argv[3]) : 784;
  const bool layer = argc > 4 && std::strcmp(argv[4], "layer") == 0;
  const int64_t N = int64_t{1} << n, H = layer ? 8 : 1, R = 1, F = 2 * n, Fr = n;
  Plan<float> p = plan_layout<float>(B, L, H, R, N, MR, NV * VB / 4, true, 1);  // one thread

  // flush denormals: the random (non-unitary) matrices here shrink the states towards zero,
  // and denormal arithmetic would time something the kernel never meets with unitary ones
  __builtin_ia32_ldmxcsr(__builtin_ia32_stmxcsr() | 0x8040);
  std::mt19937 gen(0);
  std::uniform_real_distribution<float> angle(0.f, 6.2831853f), entry(-0.1f, 0.1f);
  const int64_t tiles = H * p.ntile * p.Bt * p.P;
  Buffer phases(B * L * H * (layer ? F : R * N)), wpack(H * R * p.pack_size), Z(tiles), A(tiles),
      probs(B * L * H * N), gphase(B * L * H * (layer ? F : R * N)), gw(H * R * p.acc_size);
  for (float& v : phases) v = angle(gen);
  for (float& v : wpack) v = entry(gen);
  for (float& v : Z) v = entry(gen);
  for (float& v : A) v = entry(gen);
  p.phases = phases.data(); p.wpack = wpack.data(); p.Z = Z.data(); p.A = A.data();
  p.probs = probs.data(); p.gphase = gphase.data(); p.gw = gw.data();
  // the layer's call: angles and maps, the readout's angles, matrices and probability
  // gradients (empty otherwise)
  const int64_t on = layer ? 1 : 0;
  Buffer maps(on * (2 * (F + Fr + 1) * N + N * (roundup(F, AB) + roundup(Fr, AB)))),
      read(on * B * L * H * Fr), rpack(on * 2 * H * p.pack_size), gprobs(on * B * L * H * N),
      grphase(on * B * L * H * Fr), gwr(on * H * p.acc_size);
  if (layer) {
    for (auto* buf : {&maps, &read, &gprobs}) for (float& v : *buf) v = angle(gen) / 6.2831853f;
    for (float& v : rpack) v = entry(gen);
    float* m = maps.data();
    p.F = F; p.Fr = Fr;
    p.pmap = m; p.poff = m + F * N; p.rmap = p.poff + N; p.roff = p.rmap + Fr * N;
    p.pmap_t = p.roff + N; p.rmap_t = p.pmap_t + N * roundup(F, AB);
    p.read_phases = read.data(); p.rpack = rpack.data(); p.rbpack = rpack.data() + H * p.pack_size;
    p.gprobs = gprobs.data(); p.grphase = grphase.data(); p.gwr = gwr.data();
  }
  p.scratch_size = std::max(forward_scratch(p), backward_scratch(p));
  Buffer scratch(p.scratch_size);
  p.scratch = scratch.data();
  std::printf("n=%d (N=%ld) batch %ld, %ld tokens, tile %ld rows, %s products%s\n", n, (long)N,
              (long)B, (long)L, (long)p.Bt, p.gauss ? "Gauss (3 real GEMMs)" : "real-form",
              layer ? ", the QLAM layer's call (8 heads, phase maps, readout)" : "");

  // peak: 48 rows x K=64 against one L1-resident panel
  const int64_t K = 64, rows = 48, NR = p.NR, reps = 200;
  std::vector<float> a(rows * K, 0.5f), b(K * NR, 0.25f), c(rows * NR);
  const double tp = best_seconds([&] {
    for (int64_t r = 0; r < reps; ++r)
      for (int64_t i0 = 0; i0 < rows; i0 += MR)
        micro<float, VB, MR, NV>(K, a.data() + i0 * K, K, 1, b.data(), NR, c.data() + i0 * NR, NR, false);
  }, 300);
  const double peak = 2.0 * rows * K * NR * reps / tp;
  report("peak", 2.0 * rows * K * NR * reps, tp, 0);

  const double per_product = (p.gauss ? 6.0 : 8.0) * N * N;  // actual flops per row
  const double rows_total = double(H * p.ntile * p.Bt) * L;  // tile rows (padding incl.) x tokens
  // products per row and token: forward (layer and readout), backward (adjoint, inverse and
  // the readout's two) and the gradients' outer products
  const int fwd_products = layer ? 2 : 1, bwd_products = layer ? 4 : 2, outers = layer ? 2 : 1;
  std::vector<float> X(p.Bt * p.Pu, 0.3f), Y(p.Bt * p.Pu), tmp(2 * p.Bt * (p.Ma + N));
  const double tc = best_seconds([&] {
    for (int64_t t = 0; t < L * p.ntile * H; ++t)
      cmul<float, VB, MR, NV>(p, X.data(), p.Pu, p.wpack, Y.data(), p.P, tmp.data());
  }, 5);
  report("cmul", per_product * rows_total, tc, peak);
  const double to = best_seconds([&] {
    for (int64_t t = 0; t < L * p.ntile * H; ++t)
      couter<float, VB, MR, NV>(p, X.data(), Y.data(), p.P, p.gw, tmp.data());
  }, 5);
  report("couter", per_product * rows_total, to, peak);
  const double tf = best_seconds([&] { forward_tasks<float, VB, MR, NV>(p, 0, H * p.ntile, 0); }, 5);
  report("fwd", fwd_products * per_product * rows_total, tf, peak);
  const double tb = best_seconds([&] { backward_tasks<float, VB, MR, NV>(p, 0, H * p.ntile, 0); }, 5);
  report("bwd", (bwd_products + outers) * per_product * rows_total, tb, peak);
  const double alone = (fwd_products + bwd_products) * tc + outers * to;
  std::printf("train %.3f ms: products and outer products alone would take %.3f ms (%.0f %%);\n"
              "the rest is the O(N) work per row (phases, rotations, |v|^2) and the streams of\n"
              "phases in and probabilities / phase gradients out\n",
              (tf + tb) * 1e3, alone * 1e3, 100 * alone / (tf + tb));
}

// thermocg's compiled CPU kernels, registered as torch.ops.thermocg.*:
//   hipnn_ts_env*         the fused HIP-NN-TS interaction environment: sensitivities, cosine cutoff,
//                         tensor components l = 0, 1, 2 and the neighbour sum in one pass over the
//                         pairs, with first and second derivatives written out by hand;
//   hipnn_ts_invariants*  the rotation invariants of the interaction output, with their derivatives;
//   pair_vectors*         r = R_j - R_i + shift and its adjoint (for thermocg.neighbors.build_graph).
// The equations are in docs/hipnn_ts.md; the Python side (thermocg/_ext/__init__.py builds and loads
// this file; thermocg/potentials/hipnn.py and thermocg/neighbors.py wrap the operators in autograd
// Functions), and tests/test_hipnn.py and tests/test_neighbors.py referee them against PyTorch.
//
// Layout. Pairs come in CSR order: the pairs of receiving bead i are vec[offsets[i] .. offsets[i+1]),
// each r_ij = R_j - R_i + shift (A), with the type of j in type_j (empty when there is one type).
// The environment is A[i, c, t, nu] = sum_{pairs (i, j) with type t, d_ij < r_c} T_c(rhat_ij) s_nu(d_ij),
//
//   s_nu(d) = exp(max(-z^2 / 2, floor)) cut(d),   z = sigma_nu (1/d - inv_mu_nu),   cut(d) = cos^2(pi d / 2 r_c)
//   T(rhat) = [1, x, y, z, x^2 - 1/3, xy, xz, y^2 - 1/3, yz]       (rhat = (x, y, z))
//
// Work is done one receiving bead (a "row" of pairs) at a time, and inside a row the loops run over
// the pairs, which the compiler vectorises (the row is padded to a multiple of kPad pairs with pairs
// that do not count); the loop over sensitivities is outside. Every row is written by one thread only,
// and parameter gradients are summed per row first and then over rows, so results do not depend on
// the number of threads. Pairs at or beyond r_c contribute exactly nothing and get zero gradient.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

constexpr int kComponents = 9;  // 1 + 3 + 5
constexpr int64_t kPad = 16;     // rows are padded to a multiple of this many pairs

// ---------------------------------------------------------------------------------------------
// Branch-free exp, sin and cos that the compiler vectorises (the C library's are scalar calls).

// Taylor coefficients: exp: 1/k!;  sin(y)/y: (-1)^k/(2k+1)! in y^2;  cos: (-1)^k/(2k)! in y^2.
template <typename T, int N>
struct Series {
  T c[N];
  constexpr Series(int power_step, int first_power, bool alternating) : c() {
    double factorial = 1.0;
    int n = 0;
    for (int k = 0; k < N; ++k) {
      const int power = first_power + power_step * k;
      while (n < power) factorial *= ++n;
      c[k] = T((alternating && k % 2 ? -1.0 : 1.0) / factorial);
    }
  }
  // sum_k c_k x^k by Horner's rule
  inline T operator()(T x) const {
    T p = c[N - 1];
    for (int k = N - 2; k >= 0; --k) p = p * x + c[k];
    return p;
  }
};

// Degrees: e^r for |r| <= ln2/2 to r^7 (float; truncation 5e-9) and r^13 (double; 5e-18); sin and
// cos for 0 <= y <= pi/2 to y^13, y^14 (float; 7e-10) and y^23, y^22 (double; 8e-20).
template <typename T>
struct Polynomials;
template <>
struct Polynomials<float> {
  static constexpr Series<float, 8> exp{1, 0, false};
  static constexpr Series<float, 7> sin_over_y{2, 1, true};
  static constexpr Series<float, 8> cos{2, 0, true};
};
template <>
struct Polynomials<double> {
  static constexpr Series<double, 14> exp{1, 0, false};
  static constexpr Series<double, 12> sin_over_y{2, 1, true};
  static constexpr Series<double, 12> cos{2, 0, true};
};

template <typename T>
struct FloatBits;
template <>
struct FloatBits<float> {
  using Int = int32_t;
  static constexpr int mantissa = 23;
  static constexpr Int bias = 127;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float ln2_hi = 0.693145751953125f;
  static constexpr float ln2_lo = 1.428606765330187045e-06f;
};
template <>
struct FloatBits<double> {
  using Int = int64_t;
  static constexpr int mantissa = 52;
  static constexpr Int bias = 1023;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
};

// exp(x) for floor <= x <= 0 (floor >= -87 in float, -708 in double, so the result is normal):
// Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, a Taylor polynomial for e^r, and 2^n
// written into the exponent bits. n comes from the "magic number" rounding (its integer value sits
// in the low bits of t), so no float-to-int conversion is needed.
template <typename T>
inline T exp_nonpositive(T x) {
  using Bits = FloatBits<T>;
  using Int = typename Bits::Int;
  const T magic = Bits::round_magic;
  const T t = x * T(1.4426950408889634074) + magic;
  const T n = t - magic;
  T r = x - n * Bits::ln2_hi;
  r = r - n * Bits::ln2_lo;
  const T p = Polynomials<T>::exp(r);
  Int t_bits, magic_bits;
  std::memcpy(&t_bits, &t, sizeof t_bits);
  std::memcpy(&magic_bits, &magic, sizeof magic_bits);
  const Int scale_bits = (t_bits - magic_bits + Bits::bias) << Bits::mantissa;
  T scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

template <typename T>
inline T sin_quadrant(T y) {
  return y * Polynomials<T>::sin_over_y(y * y);
}

template <typename T>
inline T cos_quadrant(T y) {
  return Polynomials<T>::cos(y * y);
}

// ---------------------------------------------------------------------------------------------
// Per-row scratch: named arrays of the row's padded length, kept per thread and reused.

enum Field : int {
  kX, kY, kZ, kW, kU0, kU1, kU2, kCut, kCut1, kCut2,
  kComp0,                                   // 9 arrays: T_c
  kBc0 = kComp0 + kComponents,              // 9 arrays: b_c = sum_nu G s (backward)
  kGd = kBc0 + kComponents,
  // double backward only
  kUp0, kUp1, kUp2, kDd, kDu0, kDu1, kDu2, kDw,
  kDcomp0,                                  // 9 arrays: dT_c
  kBeta0 = kDcomp0 + kComponents,           // 9 arrays: beta_c = sum_nu G ds
  kGdAlpha = kBeta0 + kComponents, kGdDs,
  kGsel0,                                   // 9 arrays: G[c, type of j, nu] per pair (several types)
  kTmp0 = kGsel0 + kComponents,             // 9 arrays: one type's share of b_c or beta_c
  kFields = kTmp0 + kComponents
};

template <typename T>
struct RowScratch {
  int64_t stride = 0;
  std::vector<T> data;
  std::vector<T> all_s, all_ds;  // (n_sens, stride): s_nu and ds_nu of every pair of the row
  std::vector<int64_t> types;
  RowScratch(int64_t max_padded, int64_t n_sens) {
    stride = max_padded + kPad;  // a little slack keeps rows of arrays off the same cache sets
    data.assign(static_cast<size_t>(stride) * kFields, T(0));
    all_s.assign(static_cast<size_t>(stride) * n_sens, T(0));
    all_ds.assign(static_cast<size_t>(stride) * n_sens, T(0));
    types.assign(static_cast<size_t>(stride), 0);
  }
  T* operator[](int field) { return data.data() + static_cast<size_t>(field) * stride; }
  T* s_row(int64_t nu) { return all_s.data() + static_cast<size_t>(nu) * stride; }
  T* ds_row(int64_t nu) { return all_ds.data() + static_cast<size_t>(nu) * stride; }
};

inline int64_t padded_length(int64_t count) { return (count + kPad - 1) / kPad * kPad; }

// Geometry of one row: rhat, 1/d, the cutoff function and its first two derivatives, T_c(rhat).
// Padding pairs and pairs with d >= r_c (or d == 0) get cut = cut' = cut'' = 0, which zeroes their
// sensitivities and every derivative below.
template <typename T>
void row_geometry(const T* vec, const int64_t* type_j, int64_t count, int64_t padded, T cutoff, RowScratch<T>& S) {
  T *x = S[kX], *y = S[kY], *z = S[kZ];
  for (int64_t p = 0; p < count; ++p) {
    x[p] = vec[3 * p];
    y[p] = vec[3 * p + 1];
    z[p] = vec[3 * p + 2];
  }
  for (int64_t p = count; p < padded; ++p) {
    x[p] = cutoff;
    y[p] = z[p] = T(0);
  }
  if (type_j) {
    for (int64_t p = 0; p < count; ++p) S.types[p] = type_j[p];
    for (int64_t p = count; p < padded; ++p) S.types[p] = -1;
  }
  T *w = S[kW], *u0 = S[kU0], *u1 = S[kU1], *u2 = S[kU2], *cut = S[kCut], *cut1 = S[kCut1], *cut2 = S[kCut2];
  T *c0 = S[kComp0], *c1 = S[kComp0 + 1], *c2 = S[kComp0 + 2], *c3 = S[kComp0 + 3], *c4 = S[kComp0 + 4],
    *c5 = S[kComp0 + 5], *c6 = S[kComp0 + 6], *c7 = S[kComp0 + 7], *c8 = S[kComp0 + 8];
  const T half_pi = T(1.5707963267948966);
  const T k = half_pi / cutoff;  // cut = cos^2(k d)
  const T third = T(1) / T(3);
#pragma omp simd
  for (int64_t p = 0; p < padded; ++p) {
    const T d = std::sqrt(x[p] * x[p] + y[p] * y[p] + z[p] * z[p]);
    const bool inside = d < cutoff && d > T(0);
    const T dd = inside ? d : cutoff;
    const T inv = T(1) / dd;
    const T ux = x[p] * inv, uy = y[p] * inv, uz = z[p] * inv;
    // with a = k d and b = pi/2 - a: cos a = sin b, sin a = cos b
    const T b = half_pi - k * dd;
    const T cos_a = sin_quadrant(b);
    const T sin_a = cos_quadrant(b);
    w[p] = inv;
    u0[p] = ux;
    u1[p] = uy;
    u2[p] = uz;
    cut[p] = inside ? cos_a * cos_a : T(0);
    cut1[p] = inside ? -T(2) * k * cos_a * sin_a : T(0);
    cut2[p] = inside ? -T(2) * k * k * (cos_a * cos_a - sin_a * sin_a) : T(0);
    c0[p] = T(1);
    c1[p] = ux;
    c2[p] = uy;
    c3[p] = uz;
    c4[p] = ux * ux - third;
    c5[p] = ux * uy;
    c6[p] = ux * uz;
    c7[p] = uy * uy - third;
    c8[p] = uy * uz;
  }
}

// One pair's sensitivity nu: zeta = sigma (1/d - inv_mu), e = exp(max(-zeta^2/2, floor)), s = e cut,
// sd = ds/dd = s zeta sigma / d^2 + e cut'.
template <typename T>
struct Sensitivity {
  T zeta, e, s, sd;
};

template <typename T>
inline Sensitivity<T> sensitivity(T w, T cut, T cut1, T inv_mu, T sigma, T floor) {
  const T zeta = sigma * (w - inv_mu);
  const T e = exp_nonpositive(std::max(T(-0.5) * zeta * zeta, floor));
  const T s = e * cut;
  return {zeta, e, s, s * zeta * sigma * w * w + e * cut1};
}

// The 9 component arrays of the row as pointers (T_c from kComp0, dT_c from kDcomp0).
template <typename T>
struct ComponentArrays {
  const T* c[kComponents];
  ComponentArrays(RowScratch<T>& S, int first) {
    for (int k = 0; k < kComponents; ++k) c[k] = S[first + k];
  }
};

// G[i, c, type of j, nu] of every pair for several types, gathered into the kGsel arrays.
template <typename T>
inline void gather_coefficients(const T* grow, int64_t nu, int64_t n_types, int64_t n_sens, int64_t padded,
                                RowScratch<T>& S) {
  const int64_t comp_stride = n_types * n_sens;
  const int64_t* types = S.types.data();
  for (int c = 0; c < kComponents; ++c) {
    T* gsel = S[kGsel0 + c];
    const T* gc = grow + c * comp_stride + nu;
    for (int64_t p = 0; p < padded; ++p) gsel[p] = types[p] >= 0 ? gc[types[p] * n_sens] : T(0);
  }
}

// out[c][p] = sum_nu coef[c * coef_stride + nu] in[nu][p] for the 9 components: a small matrix product
// done kPad pairs at a time with the 9 x kPad accumulators in registers.
template <typename T>
void row_product(const T* coef, int64_t coef_stride, RowScratch<T>& S, bool of_ds, int64_t n_sens,
                 int64_t padded, int out_first) {
  for (int64_t p0 = 0; p0 < padded; p0 += kPad) {
    T acc[kComponents][kPad] = {};
    for (int64_t nu = 0; nu < n_sens; ++nu) {
      const T* x = (of_ds ? S.ds_row(nu) : S.s_row(nu)) + p0;
      for (int c = 0; c < kComponents; ++c) {
        const T g = coef[c * coef_stride + nu];
#pragma omp simd
        for (int q = 0; q < kPad; ++q) acc[c][q] += g * x[q];
      }
    }
    for (int c = 0; c < kComponents; ++c) {
      T* out = S[out_first + c] + p0;
#pragma omp simd
      for (int q = 0; q < kPad; ++q) out[q] = acc[c][q];
    }
  }
}

// The same, for several types: out[c][p] = sum_nu G[c, type of p, nu] in[nu][p].
template <typename T>
void row_product_types(const T* grow, int64_t n_types, RowScratch<T>& S, bool of_ds, int64_t n_sens,
                       int64_t padded, int out_first) {
  const int64_t* types = S.types.data();
  for (int c = 0; c < kComponents; ++c) std::fill(S[out_first + c], S[out_first + c] + padded, T(0));
  for (int64_t t = 0; t < n_types; ++t) {
    row_product(grow + t * n_sens, n_types * n_sens, S, of_ds, n_sens, padded, kTmp0);
    for (int c = 0; c < kComponents; ++c) {
      T* out = S[out_first + c];
      const T* part = S[kTmp0 + c];
#pragma omp simd
      for (int64_t p = 0; p < padded; ++p) out[p] += types[p] == t ? part[p] : T(0);
    }
  }
}

struct Layout {
  int64_t n_rows;
  int64_t n_types;
  int64_t n_sens;
  int64_t row_size() const { return kComponents * n_types * n_sens; }
};

void check_inputs(const at::Tensor& vec, const at::Tensor& offsets, const at::Tensor& type_j, int64_t n_types,
                  const at::Tensor& inv_mu, const at::Tensor& sigma) {
  TORCH_CHECK(vec.device().is_cpu(), "hipnn_ts_env: CPU tensors only");
  TORCH_CHECK(vec.dim() == 2 && vec.size(1) == 3, "hipnn_ts_env: vec must be (P, 3)");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1 && offsets.scalar_type() == at::kLong,
              "hipnn_ts_env: offsets must be int64 (N + 1,)");
  TORCH_CHECK(n_types >= 1, "hipnn_ts_env: n_types must be positive");
  TORCH_CHECK(type_j.scalar_type() == at::kLong, "hipnn_ts_env: type_j must be int64");
  TORCH_CHECK((n_types == 1 && type_j.numel() == 0) || type_j.numel() == vec.size(0),
              "hipnn_ts_env: type_j must have one entry per pair (or be empty for one type)");
  TORCH_CHECK(inv_mu.dim() == 1 && sigma.dim() == 1 && inv_mu.size(0) == sigma.size(0),
              "hipnn_ts_env: inv_mu and sigma must be (n_sens,)");
  TORCH_CHECK(inv_mu.scalar_type() == vec.scalar_type() && sigma.scalar_type() == vec.scalar_type(),
              "hipnn_ts_env: vec, inv_mu and sigma must share a dtype");
}

int64_t max_row_length(const at::Tensor& offsets) {
  if (offsets.size(0) < 2) return 0;
  return (offsets.slice(0, 1) - offsets.slice(0, 0, -1)).max().item<int64_t>();
}

// ---------------------------------------------------------------------------------------------
// Forward: A[i, c, t, nu] = sum_pairs T_c s_nu.

template <typename T>
void forward_rows(const T* vec, const int64_t* offsets, const int64_t* type_j, const T* inv_mu, const T* sigma,
                  const Layout& layout, int64_t max_row, T cutoff, T floor, T* env, int64_t begin, int64_t end) {
  const int64_t n_sens = layout.n_sens, n_types = layout.n_types;
  RowScratch<T> S(padded_length(max_row), n_sens);
  const ComponentArrays<T> comp(S, kComp0);
  const T *w = S[kW], *cut = S[kCut];
  const T *c1 = comp.c[1], *c2 = comp.c[2], *c3 = comp.c[3], *c4 = comp.c[4], *c5 = comp.c[5], *c6 = comp.c[6],
          *c7 = comp.c[7], *c8 = comp.c[8];
  for (int64_t i = begin; i < end; ++i) {
    T* row = env + i * layout.row_size();
    const int64_t first = offsets[i], count = offsets[i + 1] - first, padded = padded_length(count);
    row_geometry(vec + 3 * first, type_j ? type_j + first : nullptr, count, padded, cutoff, S);
    for (int64_t nu = 0; nu < n_sens; ++nu) {
      const T im = inv_mu[nu], sg = sigma[nu];
      if (n_types == 1) {
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0, a8 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7, a8)
        for (int64_t p = 0; p < padded; ++p) {
          const T zeta = sg * (w[p] - im);
          const T sp = exp_nonpositive(std::max(T(-0.5) * zeta * zeta, floor)) * cut[p];
          a0 += sp;
          a1 += c1[p] * sp;
          a2 += c2[p] * sp;
          a3 += c3[p] * sp;
          a4 += c4[p] * sp;
          a5 += c5[p] * sp;
          a6 += c6[p] * sp;
          a7 += c7[p] * sp;
          a8 += c8[p] * sp;
        }
        const T sums[kComponents] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
        for (int c = 0; c < kComponents; ++c) row[c * n_sens + nu] = sums[c];
        continue;
      }
      T* sv = S.s_row(0);
#pragma omp simd
      for (int64_t p = 0; p < padded; ++p) {
        const T zeta = sg * (w[p] - im);
        sv[p] = exp_nonpositive(std::max(T(-0.5) * zeta * zeta, floor)) * cut[p];
      }
      const int64_t* types = S.types.data();
      for (int c = 0; c < kComponents; ++c) {
        const T* cc = comp.c[c];
        for (int64_t t = 0; t < n_types; ++t) {
          T acc = T(0);
#pragma omp simd reduction(+ : acc)
          for (int64_t p = 0; p < padded; ++p) acc += types[p] == t ? cc[p] * sv[p] : T(0);
          row[(c * n_types + t) * n_sens + nu] = acc;
        }
      }
    }
  }
}

at::Tensor hipnn_ts_env(const at::Tensor& vec_in, const at::Tensor& offsets_in, const at::Tensor& type_j_in,
                        int64_t n_types, const at::Tensor& inv_mu_in, const at::Tensor& sigma_in, double cutoff,
                        double floor) {
  check_inputs(vec_in, offsets_in, type_j_in, n_types, inv_mu_in, sigma_in);
  const auto vec = vec_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const auto type_j = type_j_in.contiguous();
  const auto inv_mu = inv_mu_in.contiguous();
  const auto sigma = sigma_in.contiguous();
  const Layout layout{offsets.size(0) - 1, n_types, inv_mu.size(0)};
  const int64_t max_row = max_row_length(offsets);
  auto env = at::empty({layout.n_rows, kComponents, n_types, layout.n_sens}, vec.options());
  AT_DISPATCH_FLOATING_TYPES(vec.scalar_type(), "hipnn_ts_env", [&] {
    const int64_t* types = type_j.numel() ? type_j.data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, layout.n_rows, 8, [&](int64_t begin, int64_t end) {
      forward_rows<scalar_t>(vec.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), types,
                             inv_mu.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(), layout, max_row,
                             scalar_t(cutoff), scalar_t(floor), env.data_ptr<scalar_t>(), begin, end);
    });
  });
  return env;
}

// ---------------------------------------------------------------------------------------------
// Backward: given G = dL/dA, the gradients with respect to the pair vectors and the parameters.
//   a_nu = sum_c G_c,nu T_c (dL/ds_nu),   b_c = sum_nu G_c,nu s_nu (dL/dT_c)
//   dL/dr = (sum_nu a_nu ds_nu/dd) rhat + (I - rhat rhat^T) J_T^T b / d
//   dL/d inv_mu_nu = sum a_nu s_nu zeta sigma,   dL/d sigma_nu = -sum a_nu s_nu zeta (1/d - inv_mu_nu)

// J_T(rhat)^T v, the gradient with respect to rhat of sum_c v_c T_c(rhat), for one pair
template <typename T>
inline void component_gradient(T v1, T v2, T v3, T v4, T v5, T v6, T v7, T v8, T ux, T uy, T uz, T& gx, T& gy,
                               T& gz) {
  gx = v1 + T(2) * v4 * ux + v5 * uy + v6 * uz;
  gy = v2 + v5 * ux + T(2) * v7 * uy + v8 * uz;
  gz = v3 + v6 * ux + v8 * uy;
}

template <typename T>
void backward_rows(const T* grad_env, const T* vec, const int64_t* offsets, const int64_t* type_j, const T* inv_mu,
                   const T* sigma, const Layout& layout, int64_t max_row, T cutoff, T floor, T* grad_vec,
                   T* grad_inv_mu_rows, T* grad_sigma_rows, int64_t begin, int64_t end) {
  const int64_t n_sens = layout.n_sens, n_types = layout.n_types;
  const bool one_type = n_types == 1;
  RowScratch<T> S(padded_length(max_row), n_sens);
  const ComponentArrays<T> comp(S, kComp0), gsel(S, kGsel0);
  const T *w = S[kW], *cut = S[kCut], *cut1 = S[kCut1], *u0 = S[kU0], *u1 = S[kU1], *u2 = S[kU2];
  T* gd = S[kGd];
  for (int64_t i = begin; i < end; ++i) {
    const T* grow = grad_env + i * layout.row_size();
    T* gmu = grad_inv_mu_rows + i * n_sens;
    T* gsig = grad_sigma_rows + i * n_sens;
    const int64_t first = offsets[i], count = offsets[i + 1] - first, padded = padded_length(count);
    row_geometry(vec + 3 * first, type_j ? type_j + first : nullptr, count, padded, cutoff, S);
    std::fill(gd, gd + padded, T(0));
    for (int64_t nu = 0; nu < n_sens; ++nu) {
      const T sg = sigma[nu], im = inv_mu[nu];
      T g[kComponents] = {};
      if (one_type) {
        for (int c = 0; c < kComponents; ++c) g[c] = grow[c * n_sens + nu];
      } else {
        gather_coefficients(grow, nu, n_types, n_sens, padded, S);
      }
      T* sv = S.s_row(nu);
      T acc_mu = T(0), acc_sig = T(0);
#pragma omp simd reduction(+ : acc_mu, acc_sig)
      for (int64_t p = 0; p < padded; ++p) {
        const Sensitivity<T> sn = sensitivity(w[p], cut[p], cut1[p], im, sg, floor);
        T a = T(0);  // dL/ds_nu = sum_c G_c T_c
        for (int c = 0; c < kComponents; ++c) a += (one_type ? g[c] : gsel.c[c][p]) * comp.c[c][p];
        gd[p] += a * sn.sd;
        const T asz = a * sn.s * sn.zeta;
        acc_mu += asz;
        acc_sig += asz * (w[p] - im);
        sv[p] = sn.s;
      }
      gmu[nu] = acc_mu * sg;
      gsig[nu] = -acc_sig;
    }
    // b_c = sum_nu G_c,nu s_nu
    if (one_type) {
      row_product(grow, n_sens, S, false, n_sens, padded, kBc0);
    } else {
      row_product_types(grow, n_types, S, false, n_sens, padded, kBc0);
    }
    T *ox = S[kX], *oy = S[kY], *oz = S[kZ];  // the geometry's inputs are no longer needed
    const T *b1 = S[kBc0 + 1], *b2 = S[kBc0 + 2], *b3 = S[kBc0 + 3], *b4 = S[kBc0 + 4], *b5 = S[kBc0 + 5],
            *b6 = S[kBc0 + 6], *b7 = S[kBc0 + 7], *b8 = S[kBc0 + 8];
#pragma omp simd
    for (int64_t p = 0; p < padded; ++p) {
      T gx, gy, gz;
      component_gradient(b1[p], b2[p], b3[p], b4[p], b5[p], b6[p], b7[p], b8[p], u0[p], u1[p], u2[p], gx, gy, gz);
      const T radial = u0[p] * gx + u1[p] * gy + u2[p] * gz;
      ox[p] = gd[p] * u0[p] + w[p] * (gx - u0[p] * radial);
      oy[p] = gd[p] * u1[p] + w[p] * (gy - u1[p] * radial);
      oz[p] = gd[p] * u2[p] + w[p] * (gz - u2[p] * radial);
    }
    T* out = grad_vec + 3 * first;
    for (int64_t p = 0; p < count; ++p) {
      out[3 * p] = ox[p];
      out[3 * p + 1] = oy[p];
      out[3 * p + 2] = oz[p];
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hipnn_ts_env_backward(
    const at::Tensor& grad_env_in, const at::Tensor& vec_in, const at::Tensor& offsets_in,
    const at::Tensor& type_j_in, int64_t n_types, const at::Tensor& inv_mu_in, const at::Tensor& sigma_in,
    double cutoff, double floor) {
  check_inputs(vec_in, offsets_in, type_j_in, n_types, inv_mu_in, sigma_in);
  const auto grad_env = grad_env_in.contiguous();
  const auto vec = vec_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const auto type_j = type_j_in.contiguous();
  const auto inv_mu = inv_mu_in.contiguous();
  const auto sigma = sigma_in.contiguous();
  const Layout layout{offsets.size(0) - 1, n_types, inv_mu.size(0)};
  TORCH_CHECK(grad_env.numel() == layout.n_rows * layout.row_size() && grad_env.scalar_type() == vec.scalar_type(),
              "hipnn_ts_env_backward: grad_env has the wrong size or dtype");
  const int64_t max_row = max_row_length(offsets);
  auto grad_vec = at::empty_like(vec);
  auto grad_inv_mu_rows = at::empty({layout.n_rows, layout.n_sens}, vec.options());
  auto grad_sigma_rows = at::empty({layout.n_rows, layout.n_sens}, vec.options());
  AT_DISPATCH_FLOATING_TYPES(vec.scalar_type(), "hipnn_ts_env_backward", [&] {
    const int64_t* types = type_j.numel() ? type_j.data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, layout.n_rows, 8, [&](int64_t begin, int64_t end) {
      backward_rows<scalar_t>(grad_env.data_ptr<scalar_t>(), vec.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(),
                              types, inv_mu.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(), layout, max_row,
                              scalar_t(cutoff), scalar_t(floor), grad_vec.data_ptr<scalar_t>(),
                              grad_inv_mu_rows.data_ptr<scalar_t>(), grad_sigma_rows.data_ptr<scalar_t>(), begin,
                              end);
    });
  });
  return {grad_vec, grad_inv_mu_rows.sum(0), grad_sigma_rows.sum(0)};
}

// ---------------------------------------------------------------------------------------------
// Double backward. The backward B(G, r, inv_mu, sigma) = (g_r, g_mu, g_sigma) is linear in G; with
// upstream gradients (U_r per pair, U_mu, U_sigma), U . B = sum_pairs sum_{c,nu} G_c,nu dphi_c,nu, where
// dphi = d(T_c s_nu) along (U_r, U_mu, U_sigma) (a forward-mode derivative of one pair's term):
//   dd = rhat . U_r,  drhat = (U_r - rhat dd) / d,  d(1/d) = -dd / d^2,
//   dzeta = sigma (d(1/d) - U_mu) + (1/d - inv_mu) U_sigma,  ds = e k with k = -zeta cut dzeta + cut' dd.
// So dL/dG[i, c, t, nu] = sum_pairs (dT_c s_nu + T_c ds_nu), and the gradients of U . B with respect to
// r, inv_mu and sigma follow by differentiating
//   sum_c b_c(s) dT_c(rhat, drhat) + sum_nu a_nu(T) ds_nu(d, dd, inv_mu, sigma)
// once more; docs/hipnn_ts.md writes the terms out.

template <typename T>
struct DoubleBackwardOut {
  T* grad_grad_env;  // (N, 9, types, n_sens) or null
  T* grad_vec;       // (P, 3) or null (then the parameter gradients are not computed either)
  T* grad_inv_mu_rows;
  T* grad_sigma_rows;
};

template <typename T>
void double_backward_rows(const T* grad_env, const T* vec, const int64_t* offsets, const int64_t* type_j,
                          const T* inv_mu, const T* sigma, const T* up_vec, const T* up_inv_mu, const T* up_sigma,
                          const Layout& layout, int64_t max_row, T cutoff, T floor,
                          const DoubleBackwardOut<T>& out_ptrs, int64_t begin, int64_t end) {
  const int64_t n_sens = layout.n_sens, n_types = layout.n_types;
  const bool one_type = n_types == 1;
  const bool want_rest = out_ptrs.grad_vec != nullptr;
  RowScratch<T> S(padded_length(max_row), n_sens);
  const ComponentArrays<T> comp(S, kComp0), dcomp(S, kDcomp0), gsel(S, kGsel0);
  const T *w = S[kW], *u0 = S[kU0], *u1 = S[kU1], *u2 = S[kU2], *cut = S[kCut], *cut1 = S[kCut1],
          *cut2 = S[kCut2];
  T *U0 = S[kUp0], *U1 = S[kUp1], *U2 = S[kUp2];
  T *dd = S[kDd], *du0 = S[kDu0], *du1 = S[kDu1], *du2 = S[kDu2], *dw = S[kDw];
  T *gd = S[kGd], *gda = S[kGdAlpha], *gdds = S[kGdDs];
  T *dc0 = S[kDcomp0], *dc1 = S[kDcomp0 + 1], *dc2 = S[kDcomp0 + 2], *dc3 = S[kDcomp0 + 3], *dc4 = S[kDcomp0 + 4],
    *dc5 = S[kDcomp0 + 5], *dc6 = S[kDcomp0 + 6], *dc7 = S[kDcomp0 + 7], *dc8 = S[kDcomp0 + 8];
  const int64_t* types = S.types.data();
  for (int64_t i = begin; i < end; ++i) {
    const T* grow = grad_env + i * layout.row_size();
    T* ggrow = out_ptrs.grad_grad_env ? out_ptrs.grad_grad_env + i * layout.row_size() : nullptr;
    T* gmu = out_ptrs.grad_inv_mu_rows + i * n_sens;
    T* gsig = out_ptrs.grad_sigma_rows + i * n_sens;
    const int64_t first = offsets[i], count = offsets[i + 1] - first, padded = padded_length(count);
    row_geometry(vec + 3 * first, type_j ? type_j + first : nullptr, count, padded, cutoff, S);
    // the direction U_r of the pairs, and the derivatives of d, rhat, 1/d and T_c along it
    const T* up = up_vec + 3 * first;
    for (int64_t p = 0; p < count; ++p) {
      U0[p] = up[3 * p];
      U1[p] = up[3 * p + 1];
      U2[p] = up[3 * p + 2];
    }
    for (int64_t p = count; p < padded; ++p) U0[p] = U1[p] = U2[p] = T(0);
#pragma omp simd
    for (int64_t p = 0; p < padded; ++p) {
      const T ddp = u0[p] * U0[p] + u1[p] * U1[p] + u2[p] * U2[p];
      const T x = w[p] * (U0[p] - u0[p] * ddp), y = w[p] * (U1[p] - u1[p] * ddp), z = w[p] * (U2[p] - u2[p] * ddp);
      dd[p] = ddp;
      du0[p] = x;
      du1[p] = y;
      du2[p] = z;
      dw[p] = -w[p] * w[p] * ddp;
      dc0[p] = T(0);
      dc1[p] = x;
      dc2[p] = y;
      dc3[p] = z;
      dc4[p] = T(2) * u0[p] * x;
      dc5[p] = x * u1[p] + u0[p] * y;
      dc6[p] = x * u2[p] + u0[p] * z;
      dc7[p] = T(2) * u1[p] * y;
      dc8[p] = y * u2[p] + u1[p] * z;
    }
    std::fill(gd, gd + padded, T(0));
    std::fill(gda, gda + padded, T(0));
    std::fill(gdds, gdds + padded, T(0));
    for (int64_t nu = 0; nu < n_sens; ++nu) {
      const T sg = sigma[nu], im = inv_mu[nu], umu = up_inv_mu[nu], usg = up_sigma[nu];
      T g[kComponents] = {};
      if (one_type) {
        for (int c = 0; c < kComponents; ++c) g[c] = grow[c * n_sens + nu];
      } else {
        gather_coefficients(grow, nu, n_types, n_sens, padded, S);
      }
      T *sv = S.s_row(nu), *dsv = S.ds_row(nu);
      T acc_mu = T(0), acc_sig = T(0);
#pragma omp simd reduction(+ : acc_mu, acc_sig)
      for (int64_t p = 0; p < padded; ++p) {
        const T wp = w[p], w2 = wp * wp, wb = wp - im;
        const Sensitivity<T> sn = sensitivity(wp, cut[p], cut1[p], im, sg, floor);
        const T dz = sg * (dw[p] - umu) + wb * usg;             // dzeta along U
        const T k = -sn.zeta * cut[p] * dz + cut1[p] * dd[p];  // ds = e k
        const T ds = sn.e * k;
        sv[p] = sn.s;
        dsv[p] = ds;
        T a = T(0), alpha = T(0);  // sum_c G_c T_c and sum_c G_c dT_c
        for (int c = 0; c < kComponents; ++c) {
          const T gc = one_type ? g[c] : gsel.c[c][p];
          a += gc * comp.c[c][p];
          alpha += gc * dcomp.c[c][p];
        }
        const T dz_dd = -sg * w2;                                    // d zeta / dd
        const T de_dd = sn.e * sn.zeta * sg * w2;                    // d e / dd
        const T ddz_dd = T(2) * sg * w2 * wp * dd[p] - usg * w2;     // d dzeta / dd
        const T dk_dd = -dz_dd * cut[p] * dz - sn.zeta * cut1[p] * dz - sn.zeta * cut[p] * ddz_dd + cut2[p] * dd[p];
        gd[p] += a * sn.sd;
        gda[p] += alpha * sn.sd;
        gdds[p] += a * (de_dd * k + sn.e * dk_dd);
        const T dds_dmu = sn.e * sn.zeta * sg * k + sn.e * cut[p] * (sg * dz + sn.zeta * usg);
        const T dds_dsig = -sn.e * sn.zeta * wb * k + sn.e * (-wb * cut[p] * dz - sn.zeta * cut[p] * (dw[p] - umu));
        acc_mu += alpha * sn.s * sn.zeta * sg + a * dds_dmu;
        acc_sig += -alpha * sn.s * sn.zeta * wb + a * dds_dsig;
      }
      gmu[nu] = want_rest ? acc_mu : T(0);
      gsig[nu] = want_rest ? acc_sig : T(0);
      if (ggrow) {  // dL/dG[c, t, nu] = sum_pairs (dT_c s + T_c ds)
        for (int c = 0; c < kComponents; ++c) {
          const T *tc = comp.c[c], *dtc = dcomp.c[c];
          for (int64_t t = 0; t < n_types; ++t) {
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int64_t p = 0; p < padded; ++p) {
              const T term = dtc[p] * sv[p] + tc[p] * dsv[p];
              acc += one_type || types[p] == t ? term : T(0);
            }
            ggrow[(c * n_types + t) * n_sens + nu] = acc;
          }
        }
      }
    }
    if (!want_rest) continue;
    // b_c = sum_nu G s_nu, beta_c = sum_nu G ds_nu
    if (one_type) {
      row_product(grow, n_sens, S, false, n_sens, padded, kBc0);
      row_product(grow, n_sens, S, true, n_sens, padded, kBeta0);
    } else {
      row_product_types(grow, n_types, S, false, n_sens, padded, kBc0);
      row_product_types(grow, n_types, S, true, n_sens, padded, kBeta0);
    }
    const T *b1 = S[kBc0 + 1], *b2 = S[kBc0 + 2], *b3 = S[kBc0 + 3], *b4 = S[kBc0 + 4], *b5 = S[kBc0 + 5],
            *b6 = S[kBc0 + 6], *b7 = S[kBc0 + 7], *b8 = S[kBc0 + 8];
    const T *e1 = S[kBeta0 + 1], *e2 = S[kBeta0 + 2], *e3 = S[kBeta0 + 3], *e4 = S[kBeta0 + 4],
            *e5 = S[kBeta0 + 5], *e6 = S[kBeta0 + 6], *e7 = S[kBeta0 + 7], *e8 = S[kBeta0 + 8];
    T *ox = S[kX], *oy = S[kY], *oz = S[kZ];
#pragma omp simd
    for (int64_t p = 0; p < padded; ++p) {
      const T ux = u0[p], uy = u1[p], uz = u2[p], wp = w[p];
      T gx, gy, gz, bx, by, bz;
      component_gradient(b1[p], b2[p], b3[p], b4[p], b5[p], b6[p], b7[p], b8[p], ux, uy, uz, gx, gy, gz);
      // M(b) drhat: the Hessian of sum_c b_c T_c (constant in rhat) along drhat
      const T hx = T(2) * b4[p] * du0[p] + b5[p] * du1[p] + b6[p] * du2[p];
      const T hy = b5[p] * du0[p] + T(2) * b7[p] * du1[p] + b8[p] * du2[p];
      const T hz = b6[p] * du0[p] + b8[p] * du1[p];
      component_gradient(e1[p], e2[p], e3[p], e4[p], e5[p], e6[p], e7[p], e8[p], ux, uy, uz, bx, by, bz);
      const T q = gx * U0[p] + gy * U1[p] + gz * U2[p];
      const T m = gx * ux + gy * uy + gz * uz;
      const T ddp = dd[p];
      const T grad_dist = gda[p] + gdds[p] - wp * wp * (q - m * ddp);
      const T rx = hx - wp * (ddp * gx + m * U0[p]) + U0[p] * gd[p] + bx;
      const T ry = hy - wp * (ddp * gy + m * U1[p]) + U1[p] * gd[p] + by;
      const T rz = hz - wp * (ddp * gz + m * U2[p]) + U2[p] * gd[p] + bz;
      const T radial = ux * rx + uy * ry + uz * rz;
      ox[p] = grad_dist * ux + wp * (rx - ux * radial);
      oy[p] = grad_dist * uy + wp * (ry - uy * radial);
      oz[p] = grad_dist * uz + wp * (rz - uz * radial);
    }
    T* out = out_ptrs.grad_vec + 3 * first;
    for (int64_t p = 0; p < count; ++p) {
      out[3 * p] = ox[p];
      out[3 * p + 1] = oy[p];
      out[3 * p + 2] = oz[p];
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> hipnn_ts_env_double_backward(
    const at::Tensor& grad_env_in, const at::Tensor& vec_in, const at::Tensor& offsets_in,
    const at::Tensor& type_j_in, int64_t n_types, const at::Tensor& inv_mu_in, const at::Tensor& sigma_in,
    double cutoff, double floor, const at::Tensor& up_vec_in, const at::Tensor& up_inv_mu_in,
    const at::Tensor& up_sigma_in, bool need_grad_env, bool need_rest) {
  check_inputs(vec_in, offsets_in, type_j_in, n_types, inv_mu_in, sigma_in);
  const auto grad_env = grad_env_in.contiguous();
  const auto vec = vec_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const auto type_j = type_j_in.contiguous();
  const auto inv_mu = inv_mu_in.contiguous();
  const auto sigma = sigma_in.contiguous();
  const auto up_vec = up_vec_in.contiguous();
  const auto up_inv_mu = up_inv_mu_in.contiguous();
  const auto up_sigma = up_sigma_in.contiguous();
  const Layout layout{offsets.size(0) - 1, n_types, inv_mu.size(0)};
  TORCH_CHECK(grad_env.numel() == layout.n_rows * layout.row_size() && grad_env.scalar_type() == vec.scalar_type(),
              "hipnn_ts_env_double_backward: grad_env has the wrong size or dtype");
  TORCH_CHECK(up_vec.sizes() == vec.sizes() && up_inv_mu.sizes() == inv_mu.sizes() &&
                  up_sigma.sizes() == sigma.sizes(),
              "hipnn_ts_env_double_backward: upstream gradients must match the backward's outputs");
  const int64_t max_row = max_row_length(offsets);
  // outputs that are not needed come back empty (0 elements)
  auto grad_grad_env = need_grad_env ? at::empty_like(grad_env) : at::empty({0}, vec.options());
  auto grad_vec = need_rest ? at::empty_like(vec) : at::empty({0}, vec.options());
  auto grad_inv_mu_rows = at::empty({layout.n_rows, layout.n_sens}, vec.options());
  auto grad_sigma_rows = at::empty({layout.n_rows, layout.n_sens}, vec.options());
  AT_DISPATCH_FLOATING_TYPES(vec.scalar_type(), "hipnn_ts_env_double_backward", [&] {
    const int64_t* types = type_j.numel() ? type_j.data_ptr<int64_t>() : nullptr;
    DoubleBackwardOut<scalar_t> out{need_grad_env ? grad_grad_env.data_ptr<scalar_t>() : nullptr,
                                    need_rest ? grad_vec.data_ptr<scalar_t>() : nullptr,
                                    grad_inv_mu_rows.data_ptr<scalar_t>(), grad_sigma_rows.data_ptr<scalar_t>()};
    at::parallel_for(0, layout.n_rows, 8, [&](int64_t begin, int64_t end) {
      double_backward_rows<scalar_t>(grad_env.data_ptr<scalar_t>(), vec.data_ptr<scalar_t>(),
                                     offsets.data_ptr<int64_t>(), types, inv_mu.data_ptr<scalar_t>(),
                                     sigma.data_ptr<scalar_t>(), up_vec.data_ptr<scalar_t>(),
                                     up_inv_mu.data_ptr<scalar_t>(), up_sigma.data_ptr<scalar_t>(), layout, max_row,
                                     scalar_t(cutoff), scalar_t(floor), out, begin, end);
    });
  });
  return {grad_grad_env, grad_vec, grad_inv_mu_rows.sum(0), grad_sigma_rows.sum(0)};
}

// ---------------------------------------------------------------------------------------------
// The rotation invariants of the interaction output h[i, c, f] (c = 0..8 as T_c), out[i] = (h_0, vn, qn):
//   vn = sqrt(sum_{a=1..3} h_a^2 + eps),   qn = sqrt(h_Q . M h_Q + eps)
// with h_Q = (h_4 .. h_8) = (xx, xy, xz, yy, yz) and M h_Q = 2 h_Q + (h_yy, 0, 0, h_xx, 0): h_Q . M h_Q is
// twice the squared Frobenius norm of the traceless symmetric tensor. Gradients: dvn/dh_a = h_a / vn,
// dqn/dh_Q = M h_Q / qn; second derivatives (I - h h^T / vn^2) / vn and (M - Mh (Mh)^T / qn^2) / qn.
// One (i, f) at a time, vectorised over f.

template <typename T>
void invariants_rows(const T* h, int64_t n_features, T eps, T* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const T* hi = h + i * kComponents * n_features;
    T* oi = out + i * 3 * n_features;
#pragma omp simd
    for (int64_t f = 0; f < n_features; ++f) {
      const T h1 = hi[n_features + f], h2 = hi[2 * n_features + f], h3 = hi[3 * n_features + f];
      const T xx = hi[4 * n_features + f], xy = hi[5 * n_features + f], xz = hi[6 * n_features + f],
              yy = hi[7 * n_features + f], yz = hi[8 * n_features + f];
      oi[f] = hi[f];
      oi[n_features + f] = std::sqrt(h1 * h1 + h2 * h2 + h3 * h3 + eps);
      oi[2 * n_features + f] =
          std::sqrt(T(2) * (xx * xx + xy * xy + xz * xz + yy * yy + yz * yz + xx * yy) + eps);
    }
  }
}

// grad_h = J^T g; with up (the upstream gradient of grad_h) also the double backward:
// grad_g = J up and grad_h2 = sum_k g_k H_k up.
template <typename T>
void invariants_backward_rows(const T* g, const T* h, const T* up, int64_t n_features, T eps, T* grad_h,
                              T* grad_g, T* grad_h2, int64_t begin, int64_t end) {
  const int64_t F = n_features;
  for (int64_t i = begin; i < end; ++i) {
    const T* hi = h + i * kComponents * F;
    const T* gi = g + i * 3 * F;
    T* ghi = grad_h ? grad_h + i * kComponents * F : nullptr;
    const T* ui = up ? up + i * kComponents * F : nullptr;
    T* ggi = grad_g ? grad_g + i * 3 * F : nullptr;
    T* gh2i = grad_h2 ? grad_h2 + i * kComponents * F : nullptr;
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) {
      const T h1 = hi[F + f], h2 = hi[2 * F + f], h3 = hi[3 * F + f];
      const T xx = hi[4 * F + f], xy = hi[5 * F + f], xz = hi[6 * F + f], yy = hi[7 * F + f], yz = hi[8 * F + f];
      const T vn = std::sqrt(h1 * h1 + h2 * h2 + h3 * h3 + eps);
      const T m4 = T(2) * xx + yy, m5 = T(2) * xy, m6 = T(2) * xz, m7 = T(2) * yy + xx, m8 = T(2) * yz;  // M h_Q
      const T qn = std::sqrt(xx * m4 + xy * m5 + xz * m6 + yy * m7 + yz * m8 + eps);  // h_Q . M h_Q
      const T inv_v = T(1) / vn, inv_q = T(1) / qn;
      const T gv = gi[F + f] * inv_v, gq = gi[2 * F + f] * inv_q;
      if (ghi) {
        ghi[f] = gi[f];
        ghi[F + f] = gv * h1;
        ghi[2 * F + f] = gv * h2;
        ghi[3 * F + f] = gv * h3;
        ghi[4 * F + f] = gq * m4;
        ghi[5 * F + f] = gq * m5;
        ghi[6 * F + f] = gq * m6;
        ghi[7 * F + f] = gq * m7;
        ghi[8 * F + f] = gq * m8;
      }
      if (ui) {
        const T u1 = ui[F + f], u2 = ui[2 * F + f], u3 = ui[3 * F + f];
        const T u4 = ui[4 * F + f], u5 = ui[5 * F + f], u6 = ui[6 * F + f], u7 = ui[7 * F + f], u8 = ui[8 * F + f];
        const T hu = (h1 * u1 + h2 * u2 + h3 * u3) * inv_v;                        // dvn along up
        const T mu = (m4 * u4 + m5 * u5 + m6 * u6 + m7 * u7 + m8 * u8) * inv_q;  // dqn along up
        if (ggi) {
          ggi[f] = ui[f];
          ggi[F + f] = hu;
          ggi[2 * F + f] = mu;
        }
        if (gh2i) {
          const T cv = gv * hu * inv_v, cq = gq * mu * inv_q;
          gh2i[f] = T(0);
          gh2i[F + f] = gv * u1 - cv * h1;
          gh2i[2 * F + f] = gv * u2 - cv * h2;
          gh2i[3 * F + f] = gv * u3 - cv * h3;
          gh2i[4 * F + f] = gq * (T(2) * u4 + u7) - cq * m4;
          gh2i[5 * F + f] = gq * (T(2) * u5) - cq * m5;
          gh2i[6 * F + f] = gq * (T(2) * u6) - cq * m6;
          gh2i[7 * F + f] = gq * (T(2) * u7 + u4) - cq * m7;
          gh2i[8 * F + f] = gq * (T(2) * u8) - cq * m8;
        }
      }
    }
  }
}

void check_invariant_input(const at::Tensor& h, const char* what) {
  TORCH_CHECK(h.device().is_cpu() && h.dim() == 3 && h.size(1) == kComponents, what,
              ": h must be a CPU tensor (n, 9, F)");
}

at::Tensor hipnn_ts_invariants(const at::Tensor& h_in, double eps) {
  check_invariant_input(h_in, "hipnn_ts_invariants");
  const auto h = h_in.contiguous();
  auto out = at::empty({h.size(0), 3, h.size(2)}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "hipnn_ts_invariants", [&] {
    at::parallel_for(0, h.size(0), 64, [&](int64_t begin, int64_t end) {
      invariants_rows<scalar_t>(h.data_ptr<scalar_t>(), h.size(2), scalar_t(eps), out.data_ptr<scalar_t>(), begin,
                                end);
    });
  });
  return out;
}

at::Tensor hipnn_ts_invariants_backward(const at::Tensor& grad_in, const at::Tensor& h_in, double eps) {
  check_invariant_input(h_in, "hipnn_ts_invariants_backward");
  const auto h = h_in.contiguous();
  const auto grad = grad_in.contiguous();
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({h.size(0), 3, h.size(2)}) && grad.scalar_type() == h.scalar_type(),
              "hipnn_ts_invariants_backward: grad must be (n, 3, F) of h's dtype");
  auto grad_h = at::empty_like(h);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "hipnn_ts_invariants_backward", [&] {
    at::parallel_for(0, h.size(0), 64, [&](int64_t begin, int64_t end) {
      invariants_backward_rows<scalar_t>(grad.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), nullptr, h.size(2),
                                         scalar_t(eps), grad_h.data_ptr<scalar_t>(), nullptr, nullptr, begin, end);
    });
  });
  return grad_h;
}

std::tuple<at::Tensor, at::Tensor> hipnn_ts_invariants_double_backward(const at::Tensor& up_in,
                                                                       const at::Tensor& grad_in,
                                                                       const at::Tensor& h_in, double eps,
                                                                       bool need_grad, bool need_h) {
  check_invariant_input(h_in, "hipnn_ts_invariants_double_backward");
  const auto h = h_in.contiguous();
  const auto grad = grad_in.contiguous();
  const auto up = up_in.contiguous();
  TORCH_CHECK(up.sizes() == h.sizes() && grad.dim() == 3 && grad.size(1) == 3,
              "hipnn_ts_invariants_double_backward: shapes");
  auto grad_grad = need_grad ? at::empty_like(grad) : at::empty({0}, h.options());
  auto grad_h = need_h ? at::empty_like(h) : at::empty({0}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "hipnn_ts_invariants_double_backward", [&] {
    at::parallel_for(0, h.size(0), 64, [&](int64_t begin, int64_t end) {
      invariants_backward_rows<scalar_t>(grad.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(),
                                         h.size(2), scalar_t(eps), nullptr,
                                         need_grad ? grad_grad.data_ptr<scalar_t>() : nullptr,
                                         need_h ? grad_h.data_ptr<scalar_t>() : nullptr, begin, end);
    });
  });
  return {grad_grad, grad_h};
}

// ---------------------------------------------------------------------------------------------
// Pair vectors r_p = R[j_p] - R[i_p] + shift_p and their adjoint (the gradient with respect to R):
// grad_R[k] = sum_{p: j_p = k} g_p - sum_{p: i_p = k} g_p. The first sum is a serial scatter in pair
// order, the second a per-row sum when the pairs are sorted by i (CSR offsets), so the result does
// not depend on the number of threads. Both are linear, and each is the other's adjoint.

at::Tensor pair_vectors(const at::Tensor& positions_in, const at::Tensor& pair_i_in, const at::Tensor& pair_j_in,
                        const at::Tensor& shift_in) {
  TORCH_CHECK(positions_in.device().is_cpu() && positions_in.dim() == 2 && positions_in.size(1) == 3,
              "pair_vectors: positions must be a CPU tensor (N, 3)");
  const auto positions = positions_in.contiguous();
  const auto pair_i = pair_i_in.contiguous();
  const auto pair_j = pair_j_in.contiguous();
  const auto shift = shift_in.contiguous();
  const int64_t n_pairs = pair_i.size(0);
  TORCH_CHECK(pair_j.size(0) == n_pairs && pair_i.scalar_type() == at::kLong && pair_j.scalar_type() == at::kLong,
              "pair_vectors: pair_i, pair_j must be int64 of one length");
  TORCH_CHECK(shift.numel() == 0 || (shift.size(0) == n_pairs && shift.scalar_type() == positions.scalar_type()),
              "pair_vectors: shift must be (P, 3) of the positions' dtype, or empty");
  auto out = at::empty({n_pairs, 3}, positions.options());
  AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "pair_vectors", [&] {
    const scalar_t* pos = positions.data_ptr<scalar_t>();
    const int64_t *pi = pair_i.data_ptr<int64_t>(), *pj = pair_j.data_ptr<int64_t>();
    const scalar_t* sh = shift.numel() ? shift.data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n_pairs, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t *ri = pos + 3 * pi[p], *rj = pos + 3 * pj[p];
        for (int k = 0; k < 3; ++k) o[3 * p + k] = rj[k] - ri[k] + (sh ? sh[3 * p + k] : scalar_t(0));
      }
    });
  });
  return out;
}

at::Tensor pair_vectors_adjoint(const at::Tensor& grad_in, const at::Tensor& pair_i_in, const at::Tensor& pair_j_in,
                                const at::Tensor& offsets_in, int64_t n_particles) {
  const auto grad = grad_in.contiguous();
  const auto pair_i = pair_i_in.contiguous();
  const auto pair_j = pair_j_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const int64_t n_pairs = pair_i.size(0);
  TORCH_CHECK(grad.device().is_cpu() && grad.dim() == 2 && grad.size(0) == n_pairs && grad.size(1) == 3,
              "pair_vectors_adjoint: grad must be a CPU tensor (P, 3)");
  TORCH_CHECK(offsets.numel() == 0 || offsets.numel() == n_particles + 1,
              "pair_vectors_adjoint: offsets must be (N + 1,) or empty");
  auto out = at::zeros({n_particles, 3}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "pair_vectors_adjoint", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const int64_t *pi = pair_i.data_ptr<int64_t>(), *pj = pair_j.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    if (offsets.numel()) {
      const int64_t* off = offsets.data_ptr<int64_t>();
      at::parallel_for(0, n_particles, 64, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          scalar_t sx = 0, sy = 0, sz = 0;
          for (int64_t p = off[k]; p < off[k + 1]; ++p) {
            sx += g[3 * p];
            sy += g[3 * p + 1];
            sz += g[3 * p + 2];
          }
          o[3 * k] = -sx;
          o[3 * k + 1] = -sy;
          o[3 * k + 2] = -sz;
        }
      });
    } else {
      for (int64_t p = 0; p < n_pairs; ++p)
        for (int k = 0; k < 3; ++k) o[3 * pi[p] + k] -= g[3 * p + k];
    }
    for (int64_t p = 0; p < n_pairs; ++p)
      for (int k = 0; k < 3; ++k) o[3 * pj[p] + k] += g[3 * p + k];
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(thermocg, m) {
  m.def("hipnn_ts_env(Tensor vec, Tensor offsets, Tensor type_j, int n_types, Tensor inv_mu, Tensor sigma, "
        "float cutoff, float floor) -> Tensor");
  m.def("hipnn_ts_env_backward(Tensor grad_env, Tensor vec, Tensor offsets, Tensor type_j, int n_types, "
        "Tensor inv_mu, Tensor sigma, float cutoff, float floor) -> (Tensor, Tensor, Tensor)");
  m.def("hipnn_ts_env_double_backward(Tensor grad_env, Tensor vec, Tensor offsets, Tensor type_j, int n_types, "
        "Tensor inv_mu, Tensor sigma, float cutoff, float floor, Tensor up_vec, Tensor up_inv_mu, "
        "Tensor up_sigma, bool need_grad_env, bool need_rest) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("hipnn_ts_invariants(Tensor h, float eps) -> Tensor");
  m.def("pair_vectors(Tensor positions, Tensor pair_i, Tensor pair_j, Tensor shift) -> Tensor");
  m.def("pair_vectors_adjoint(Tensor grad, Tensor pair_i, Tensor pair_j, Tensor offsets, int n_particles) -> Tensor");
  m.def("hipnn_ts_invariants_backward(Tensor grad, Tensor h, float eps) -> Tensor");
  m.def("hipnn_ts_invariants_double_backward(Tensor up, Tensor grad, Tensor h, float eps, bool need_grad, "
        "bool need_h) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(thermocg, CPU, m) {
  m.impl("hipnn_ts_env", &hipnn_ts_env);
  m.impl("hipnn_ts_env_backward", &hipnn_ts_env_backward);
  m.impl("hipnn_ts_env_double_backward", &hipnn_ts_env_double_backward);
  m.impl("hipnn_ts_invariants", &hipnn_ts_invariants);
  m.impl("pair_vectors", &pair_vectors);
  m.impl("pair_vectors_adjoint", &pair_vectors_adjoint);
  m.impl("hipnn_ts_invariants_backward", &hipnn_ts_invariants_backward);
  m.impl("hipnn_ts_invariants_double_backward", &hipnn_ts_invariants_double_backward);
}

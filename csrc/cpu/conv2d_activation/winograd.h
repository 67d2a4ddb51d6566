// conv2d_activation's Winograd path: the tile matrices and the constant-matrix
// products that apply them (winograd.cpp does the rest).
// Plain constants and templates over the element type (float, or __m512 whose
// +, -, * gcc provides): no intrinsics here.
#pragma once

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {
namespace winograd {

// The tile shapes, F(m x m, r x r) with n = m + r - 1: B^T (n x n), G (n x r),
// A^T (m x n). Each set comes from the Toom-Cook construction on the points
// listed plus infinity, with the divisions moved into G (applied once per call
// to the weights) so that B^T stays integral; each was checked against a
// direct correlation in exact fractions. Float32 error against float64, with
// 256 channels summed (simulated): F(2x2, 3x3) 1.7x a direct float32
// convolution's, the three others 11-15x (about 1e-5 at unit-scale inputs).

// F(2x2, 3x3), points 0, +-1 (Lavin and Gray's matrices): coefficients 0, +-1, +-1/2.
struct F2x2_3x3 {
  static constexpr int m = 2, r = 3, n = 4;
  static constexpr float BT[n][n] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[n][r] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[m][n] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

// F(4x4, 3x3), points 0, +-1, +-2: 36 multiplications per 16 outputs, where
// F(2x2, 3x3) needs 64 (4 tiles of 16).
struct F4x4_3x3 {
  static constexpr int m = 4, r = 3, n = 6;
  static constexpr float BT[n][n] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[n][r] = {{0.25f, 0, 0},
                                    {-1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6},
                                    {1.f / 24, -1.f / 12, 1.f / 6},
                                    {0, 0, 1}};
  static constexpr float AT[m][n] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// F(2x2, 5x5), points 0, +-1, +-2 (the same B^T as F(4x4, 3x3)).
struct F2x2_5x5 {
  static constexpr int m = 2, r = 5, n = 6;
  static constexpr float BT[n][n] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[n][r] = {
      {0.25f, 0, 0, 0, 0},
      {-1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6},
      {-1.f / 6, 1.f / 6, -1.f / 6, 1.f / 6, -1.f / 6},
      {1.f / 24, 1.f / 12, 1.f / 6, 1.f / 3, 2.f / 3},
      {1.f / 24, -1.f / 12, 1.f / 6, -1.f / 3, 2.f / 3},
      {0, 0, 0, 0, 1}};
  static constexpr float AT[m][n] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};
};

// F(3x3, 5x5), points 0, +-1, +-2, -1/2: 49 multiplications per 9 outputs,
// where F(2x2, 5x5) needs 81 (2.25 tiles of 36); and AlexNet's 27 x 27 conv2
// output is exactly 9 x 9 tiles. (+1/2 or 3 as the sixth point: +1/2 is as
// accurate, 3 is 16x worse.)
struct F3x3_5x5 {
  static constexpr int m = 3, r = 5, n = 7;
  static constexpr float BT[n][n] = {
      {4, 8, -5, -10, 1, 2, 0}, {0, -4, -12, -7, 3, 2, 0}, {0, 4, 4, -9, -1, 2, 0},
      {0, -2, -5, 0, 5, 2, 0},  {0, 2, 3, -4, -3, 2, 0},   {0, 4, 0, -5, 0, 1, 0},
      {0, 4, 8, -5, -10, 1, 2}};
  static constexpr float G[n][r] = {
      {0.25f, 0, 0, 0, 0},
      {-1.f / 18, -1.f / 18, -1.f / 18, -1.f / 18, -1.f / 18},
      {1.f / 6, -1.f / 6, 1.f / 6, -1.f / 6, 1.f / 6},
      {1.f / 120, 1.f / 60, 1.f / 30, 1.f / 15, 2.f / 15},
      {-1.f / 72, 1.f / 36, -1.f / 18, 1.f / 9, -2.f / 9},
      {-32.f / 45, 16.f / 45, -8.f / 45, 4.f / 45, -2.f / 45},
      {0, 0, 0, 0, 0.5f}};
  static constexpr float AT[m][n] = {
      {1, 1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, -0.5f, 0}, {0, 1, 1, 4, 4, 0.25f, 1}};
};

// out[i][j] = sum_k M[i][k] * in[k][j] for a constant matrix M (TRANS: M[k][i]);
// T is float or a vector of 16 (__m512, whose +, -, * gcc provides). Fully
// unrolled, so zero coefficients drop out and +-1 become adds and subtracts.
template <bool TRANS, int I, int K, int J, typename T, int MR, int MC>
inline void cmul(const float (&m)[MR][MC], const T (&in)[K][J], T (&out)[I][J]) {
#pragma GCC unroll 8
  for (int i = 0; i < I; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      T acc{};
      bool first = true;
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        const float c = TRANS ? m[k][i] : m[i][k];
        if (c == 0.0f) continue;
        const T x = in[k][j];
        if (first) acc = c == 1.0f ? x : (c == -1.0f ? -x : c * x);
        else if (c == 1.0f) acc += x;
        else if (c == -1.0f) acc -= x;
        else acc += c * x;
        first = false;
      }
      out[i][j] = acc;
    }
}

// X -> M X M^T for a constant M (rows x cols) and X (cols x cols): the 2D
// transforms, each a 1D transform of the columns then of the rows.
template <bool TRANS, int ROWS, int COLS, typename T, int MR, int MC>
inline void sandwich(const float (&m)[MR][MC], const T (&x)[COLS][COLS], T (&out)[ROWS][ROWS]) {
  T t[ROWS][COLS], tt[COLS][ROWS], o[ROWS][ROWS];
  cmul<TRANS, ROWS, COLS, COLS>(m, x, t);  // M X
#pragma GCC unroll 8
  for (int a = 0; a < ROWS; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < COLS; ++b) tt[b][a] = t[a][b];
  cmul<TRANS, ROWS, COLS, ROWS>(m, tt, o);  // M (M X)^T = (M X M^T)^T
#pragma GCC unroll 8
  for (int a = 0; a < ROWS; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < ROWS; ++b) out[a][b] = o[b][a];
}

}  // namespace winograd
}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex

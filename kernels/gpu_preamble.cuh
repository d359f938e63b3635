// Device helpers of every intervalnn GPU kernel (read by kernels/gpu_elementwise.py).
#define INN_F32_BIN(name, ins) \
    __device__ __forceinline__ float name(float a, float b) { \
        float r; asm(ins " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
#define INN_F32_UN(name, ins) \
    __device__ __forceinline__ float name(float a) { \
        float r; asm(ins " %0, %1;" : "=f"(r) : "f"(a)); return r; }
#define INN_F32_CMP(name, cmp, op) \
    __device__ __forceinline__ bool name(float a, float b) { \
        unsigned r; \
        asm("{\n\t.reg .pred p;\n\tsetp." cmp ".f32 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}" \
            : "=r"(r) : "f"(a), "f"(b)); \
        return r != 0; } \
    __device__ __forceinline__ bool name(double a, double b) { return a op b; }
#define INN_F64_BIN(name, fn) \
    __device__ __forceinline__ double name(double a, double b) { return fn(a, b); }

INN_F32_BIN(inn_add_rd, "add.rm.f32")      INN_F64_BIN(inn_add_rd, __dadd_rd)
INN_F32_BIN(inn_add_ru, "add.rp.f32")      INN_F64_BIN(inn_add_ru, __dadd_ru)
INN_F32_BIN(inn_mul_rd_raw, "mul.rm.f32")  INN_F64_BIN(inn_mul_rd_raw, __dmul_rd)
INN_F32_BIN(inn_mul_ru_raw, "mul.rp.f32")  INN_F64_BIN(inn_mul_ru_raw, __dmul_ru)
INN_F32_BIN(inn_div_rd, "div.rm.f32")      INN_F64_BIN(inn_div_rd, __ddiv_rd)
INN_F32_BIN(inn_div_ru, "div.rp.f32")      INN_F64_BIN(inn_div_ru, __ddiv_ru)
INN_F32_UN(inn_sqrt_rd, "sqrt.rm.f32")
INN_F32_UN(inn_sqrt_ru, "sqrt.rp.f32")
__device__ __forceinline__ double inn_sqrt_rd(double x) { return __dsqrt_rd(x); }
__device__ __forceinline__ double inn_sqrt_ru(double x) { return __dsqrt_ru(x); }

// Ordered comparisons (false when either side is NaN), as in C.
INN_F32_CMP(inn_eq, "eq", ==)
INN_F32_CMP(inn_lt, "lt", <)
INN_F32_CMP(inn_le, "le", <=)
INN_F32_CMP(inn_gt, "gt", >)
INN_F32_CMP(inn_ge, "ge", >=)

// Sign flip and absolute value on the encoding (exact, no flush).
__device__ __forceinline__ float inn_neg(float x) {
    return __int_as_float(__float_as_int(x) ^ 0x80000000);
}
__device__ __forceinline__ double inn_neg(double x) { return -x; }
__device__ __forceinline__ float inn_abs(float x) {
    return __int_as_float(__float_as_int(x) & 0x7fffffff);
}
__device__ __forceinline__ double inn_abs(double x) { return fabs(x); }

// Exact widening to double, and rounding to nearest back to the type of `like`.
__device__ __forceinline__ double inn_to_d(float x) {
    double r; asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(x)); return r;
}
__device__ __forceinline__ double inn_to_d(double x) { return x; }
__device__ __forceinline__ float inn_round(double x, float like) {
    float r; asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(x)); return r;
}
__device__ __forceinline__ double inn_round(double x, double like) { return x; }

#define INN_INF_D __longlong_as_double(0x7ff0000000000000LL)
__device__ __forceinline__ float inn_inf(float like) { return __int_as_float(0x7f800000); }
__device__ __forceinline__ double inn_inf(double like) { return INN_INF_D; }

// A zero bound is returned as +0 (NaN passes through).
template <typename F> __device__ __forceinline__ F inn_z(F x) {
    return inn_eq(x, (F)0) ? (F)0 : x;
}
template <typename F> __device__ __forceinline__ bool inn_ge0(F x) { return inn_ge(x, (F)0); }
template <typename F> __device__ __forceinline__ bool inn_le0(F x) { return inn_le(x, (F)0); }
template <typename F> __device__ __forceinline__ F inn_min(F a, F b) {
    return inn_lt(b, a) ? b : a;
}
template <typename F> __device__ __forceinline__ F inn_max(F a, F b) {
    return inn_gt(b, a) ? b : a;
}

// IEEE 1788 bound products: 0 * anything (inf too) = 0.
template <typename F> __device__ __forceinline__ F inn_mul_rd(F a, F b) {
    return (inn_eq(a, (F)0) || inn_eq(b, (F)0)) ? (F)0 : inn_mul_rd_raw(a, b);
}
template <typename F> __device__ __forceinline__ F inn_mul_ru(F a, F b) {
    return (inn_eq(a, (F)0) || inn_eq(b, (F)0)) ? (F)0 : inn_mul_ru_raw(a, b);
}

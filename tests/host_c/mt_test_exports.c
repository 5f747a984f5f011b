/* Test-only: exports the header's inline rounding functions so tests/test_kernels_host.py can call them. */
#include "mt_kernels.h"

int32_t mt_test_requantize(int32_t acc, int32_t multiplier, int32_t shift);
int32_t mt_test_doubling_high_mul(int32_t a, int32_t b);
int32_t mt_test_divide_by_pot(int32_t x, int32_t exponent);

int32_t mt_test_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    return mt_requantize(acc, multiplier, shift);
}

int32_t mt_test_doubling_high_mul(int32_t a, int32_t b)
{
    return mt_doubling_high_mul(a, b);
}

int32_t mt_test_divide_by_pot(int32_t x, int32_t exponent)
{
    return mt_divide_by_pot(x, exponent);
}

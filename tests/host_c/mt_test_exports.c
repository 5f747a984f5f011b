/* Test-only: exports the header's inline rounding function so tests/test_kernels_host.py can call it. */
#include "mt_kernels.h"

int32_t mt_test_requantize(int32_t acc, int32_t multiplier, int32_t shift);

int32_t mt_test_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    return mt_requantize(acc, multiplier, shift);
}

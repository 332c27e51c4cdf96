/* Test-only helper for running Rust programs under Wine 8 (never shipped, never used on
 * Windows): Rust's std imports ProcessPrng from bcryptprimitives.dll, which Wine 8 lacks.
 * This DLL exports it, filling the buffer with RtlGenRandom (advapi32's SystemFunction036).
 * ci/windows.sh builds it with mingw and puts it next to the test binaries. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG len);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}

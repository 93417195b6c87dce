/* Test-harness shim, never shipped: Wine 8 has no bcryptprimitives.dll, whose ProcessPrng
 * Rust's std imports on Windows for its random numbers (HashMap keys). This DLL exports
 * ProcessPrng and fills the buffer with RtlGenRandom (advapi32 SystemFunction036), which
 * Wine has. `cargo xtask windows` builds it with mingw and puts it in its own Wine prefix. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

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

/* A stand-in for bcryptprimitives.dll, shipped beside bitbridge's Windows servers.
 *
 * Rust's standard library (1.78 and later) imports ProcessPrng from bcryptprimitives.dll, which Wine
 * has only since 9.0; under Wine 8 (Debian 12) a Rust program without it does not start. This DLL
 * exports ProcessPrng and fills the buffer with RtlGenRandom (advapi32's SystemFunction036), the
 * random source Rust used before 1.78. Windows and newer Wine load their own system DLL instead
 * (KnownDLLs), so the stub is never used there.
 *
 * Built with mingw-w64 (-shared -Wl,--kill-at: an undecorated export on i686) by `./x winservers`
 * and by `bitbridge servers install --windows`, which embeds this file: it lives with the command.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}

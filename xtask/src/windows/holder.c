/* Test helper, never shipped: a second Windows process that holds a file the way a running
 * VM does, opened for reading and writing while sharing only reading. Prints "held" once the
 * file is open, then keeps it open until its standard input closes.
 * Usage: holder.exe PATH. Exit 2 if the file cannot be opened. */
#include <stdio.h>
#include <windows.h>

int wmain(int argc, wchar_t **argv)
{
    if (argc != 2) {
        fputs("usage: holder PATH\n", stderr);
        return 2;
    }
    HANDLE h = CreateFileW(argv[1], GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "holder: cannot open (error %lu)\n", GetLastError());
        return 2;
    }
    puts("held");
    fflush(stdout);
    while (getchar() != EOF) {
    }
    CloseHandle(h);
    return 0;
}

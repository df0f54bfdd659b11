/*
 * shared_memory.c: Microsoft's "Creating Named Shared Memory" sample, as a Windows
 * program: one process creates a named section and writes a message into it, another
 * opens it by name and prints the message. Only the #include differs from Windows.
 *
 *   cc -o shared_memory examples/shared_memory.c $(pkg-config --cflags --libs sections)
 *   ./shared_memory write &        # creates Global\MyFileMappingObject, holds it
 *   ./shared_memory read           # prints the message
 *   fg, then Enter                 # the writer closes: the section is gone (Windows lifetime)
 *
 * Build with -DUNICODE to use the W calls (TEXT() then makes UTF-16 names).
 * SECTIONFS_MOUNT names the mount (default /mnt/sections).
 */
#include <sections.h> /* on Windows: #include <windows.h> */
#include <stdio.h>
#include <string.h>

#define BUF_SIZE 256

static const char message[] = "Message from first process.";

int main(int argc, char **argv)
{
    HANDLE hMapFile;
    char *pBuf;

    if (argc != 2 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
        fprintf(stderr, "usage: shared_memory write|read\n");
        return 64;
    }
    if (strcmp(argv[1], "write") == 0) {
        hMapFile = CreateFileMapping(INVALID_HANDLE_VALUE, /* use the paging file */
                                     NULL,                 /* default security */
                                     PAGE_READWRITE,       /* read/write access */
                                     0,                    /* size: high DWORD */
                                     BUF_SIZE,             /* size: low DWORD */
                                     TEXT("Global\\MyFileMappingObject"));
    } else {
        hMapFile = OpenFileMapping(FILE_MAP_ALL_ACCESS, FALSE,
                                   TEXT("Global\\MyFileMappingObject"));
    }
    if (hMapFile == NULL) {
        fprintf(stderr, "Could not open file mapping object (%lu).\n",
                (unsigned long)GetLastError());
        return 1;
    }
    if (strcmp(argv[1], "write") == 0 && GetLastError() == ERROR_ALREADY_EXISTS)
        printf("The mapping object existed already.\n");

    pBuf = (char *)MapViewOfFile(hMapFile, FILE_MAP_ALL_ACCESS, 0, 0, BUF_SIZE);
    if (pBuf == NULL) {
        fprintf(stderr, "Could not map view of file (%lu).\n", (unsigned long)GetLastError());
        CloseHandle(hMapFile);
        return 1;
    }
    if (strcmp(argv[1], "write") == 0) {
        memcpy(pBuf, message, sizeof message);
        printf("Written; press Enter to close.\n");
        fflush(stdout);
        (void)getchar();
    } else {
        printf("%s\n", pBuf);
    }
    UnmapViewOfFile(pBuf);
    CloseHandle(hMapFile);
    return 0;
}

/*
 * sections.h: the Win32 named file-mapping calls, on a sectionfs mount.
 *
 * A Windows program that uses CreateFileMapping / OpenFileMapping / MapViewOfFile by
 * name builds unchanged on Linux but for its #include:
 *
 *     #include <sections.h>            (instead of <windows.h>)
 *     cc prog.c $(pkg-config --cflags --libs sections)
 *
 * Every named section is a file on the mount: "Name" is $SECTIONFS_MOUNT/Name (default
 * /mnt/sections/Name), "Global\Name" is Global/Name and "Local\Name" is Local/Name (the
 * calling user's own namespace). The mount is read from the environment at every call.
 *
 * GetLastError() is per thread, as on Windows. A successful CreateFileMapping sets it to
 * 0 (this call created the section) or ERROR_ALREADY_EXISTS (it opened an existing one);
 * the answer comes from an exclusive create (O_CREAT|O_EXCL), so among any number of
 * racing threads and processes exactly one gets 0. Failed calls set a Win32 error code.
 *
 * Where Linux or the mount cannot do what Windows does, the call's comment says so.
 */
#ifndef SECTIONS_H
#define SECTIONS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Types. Skipped where a Windows compatibility layer (Wine's or MinGW's windef.h)
 * already declared them, or when SECTIONS_NO_WIN32_TYPES is defined. */
#if !defined(_WINDEF_) && !defined(_WINDEF_H) && !defined(SECTIONS_NO_WIN32_TYPES)
typedef void *HANDLE;
typedef uint32_t DWORD; /* 32 bits, as on Windows (Linux's unsigned long has 64) */
typedef int BOOL;
typedef size_t SIZE_T;
typedef void *LPVOID;
typedef const void *LPCVOID;
typedef char CHAR;
typedef const char *LPCSTR;
/* WCHAR is 16 bits (UTF-16), as on Windows. Linux's wchar_t has 32 bits, so a Windows
 * L"Name" literal does not fit LPCWSTR: write u"Name" (C11 char16_t, the same type) or
 * TEXT("Name"), which gives u"Name" when UNICODE is defined. */
typedef uint16_t WCHAR;
typedef const WCHAR *LPCWSTR;
typedef struct _SECURITY_ATTRIBUTES {
    DWORD nLength;
    LPVOID lpSecurityDescriptor;
    BOOL bInheritHandle;
} SECURITY_ATTRIBUTES, *PSECURITY_ATTRIBUTES, *LPSECURITY_ATTRIBUTES;
#endif

#ifndef WINAPI
#define WINAPI
#endif
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#ifndef TEXT
#ifdef UNICODE
#define TEXT(s) u##s
#else
#define TEXT(s) s
#endif
#endif

#ifndef INVALID_HANDLE_VALUE
#define INVALID_HANDLE_VALUE ((HANDLE)(intptr_t)-1)
#endif
/* hFile for CreateFileMapping: a file descriptor from open(2) (Linux has no CreateFile). */
#ifndef HANDLE_FROM_FD
#define HANDLE_FROM_FD(fd) ((HANDLE)(intptr_t)(fd))
#endif

/* ---- flProtect of CreateFileMapping: one page protection ... */
#ifndef PAGE_READONLY
#define PAGE_READONLY 0x02
#define PAGE_READWRITE 0x04
#define PAGE_WRITECOPY 0x08
#endif
/* ... with at most one of these. */
#ifndef SEC_COMMIT
#define SEC_RESERVE 0x04000000
#define SEC_COMMIT 0x08000000
#endif

/* ---- dwDesiredAccess of MapViewOfFile and OpenFileMapping. */
#ifndef FILE_MAP_READ
#define FILE_MAP_COPY 0x0001
#define FILE_MAP_WRITE 0x0002
#define FILE_MAP_READ 0x0004
#define FILE_MAP_ALL_ACCESS 0x000F001F
#endif

/* ---- GetLastError() values (Windows' numbers). */
#ifndef ERROR_SUCCESS
#define ERROR_SUCCESS 0
#endif
#ifndef NO_ERROR
#define NO_ERROR 0
#endif
#ifndef ERROR_FILE_NOT_FOUND
#define ERROR_FILE_NOT_FOUND 2
#define ERROR_PATH_NOT_FOUND 3
#define ERROR_TOO_MANY_OPEN_FILES 4
#define ERROR_ACCESS_DENIED 5
#define ERROR_INVALID_HANDLE 6
#define ERROR_NOT_ENOUGH_MEMORY 8
#define ERROR_GEN_FAILURE 31
#define ERROR_INVALID_PARAMETER 87
#define ERROR_DISK_FULL 112
#define ERROR_ALREADY_EXISTS 183
#define ERROR_FILENAME_EXCED_RANGE 206
#define ERROR_INVALID_ADDRESS 487
#define ERROR_FILE_INVALID 1006
#define ERROR_MAPPED_ALIGNMENT 1132
#endif

/*
 * CreateFileMapping: creates the named section, or opens it if it exists.
 *
 * hFile == INVALID_HANDLE_VALUE: a section of the mount (Windows: backed by the paging
 *   file). The size must not be 0 (ERROR_INVALID_PARAMETER). The creator marks it
 *   user.sectionfs.lifetime=handles right after creating it, while it holds its handle,
 *   so it has the Windows lifetime: the name goes when the last handle is closed and the
 *   last view unmapped, in every process (each view holds a handle of its own, as
 *   Windows' views do).
 * hFile == HANDLE_FROM_FD(fd), fd from open(2): a section over that regular file, made
 *   as the mount's `ln -s /abs/path Name` with the path the kernel gives for the fd
 *   (/proc/self/fd/N), and given the same handle lifetime (the file itself is never
 *   removed). Limits: the file must still have that path (a deleted or renamed-away file
 *   is ERROR_FILE_INVALID), must not itself be on the mount (ERROR_INVALID_PARAMETER), and
 *   is opened by the mount's daemon with the caller's rights; a larger size grows the
 *   file. A size of 0 takes the file's size; a file of size 0 is ERROR_FILE_INVALID.
 * lpName == NULL (or ""): an unnamed section, not on the mount: a memfd for
 *   INVALID_HANDLE_VALUE, the file itself for a file handle.
 *
 * Names: "Global\" and "Local\" (exactly so spelt) choose the namespace; any other
 * backslash is ERROR_INVALID_PARAMETER, and so is a '/' or a name ending in ".meta",
 * which Windows allows but a file name cannot be. Names are case-sensitive (Windows:
 * case-insensitive) and at most 250 bytes of UTF-8 (ERROR_FILENAME_EXCED_RANGE).
 *
 * Size: the section grows to the size asked when it is smaller, also when it exists
 * already (KB Q104012's growth; current Windows keeps the old size instead), if the
 * handle may write (PAGE_READWRITE); a section never shrinks. With SEC_COMMIT (the
 * default) growth allocates its storage (fallocate) or fails with ERROR_DISK_FULL,
 * changing nothing; with SEC_RESERVE it is sparse only if the mount has commit=lazy (on a
 * commit=eager mount every growth is committed). Creation and first growth are two
 * steps: another process's OpenFileMapping between them finds the section at size 0
 * (its MapViewOfFile with size 0 then fails with ERROR_FILE_INVALID).
 *
 * lpAttributes: NULL, or bInheritHandle only: a new section is mode 0600 (the default
 *   security descriptor: its creator only); use chmod(2) on the mount to share it with
 *   other users. bInheritHandle keeps the descriptor open across exec.
 * PAGE_READONLY: views can only read (a write is SIGSEGV, the access violation).
 *   Windows' check that a later open asks no more than the creator's protection is the
 *   file's mode bits here.
 */
HANDLE WINAPI CreateFileMappingA(HANDLE hFile, LPSECURITY_ATTRIBUTES lpAttributes,
                                 DWORD flProtect, DWORD dwMaximumSizeHigh,
                                 DWORD dwMaximumSizeLow, LPCSTR lpName);
/* The same with a UTF-16 name (converted to UTF-8; a lone surrogate is
 * ERROR_INVALID_PARAMETER, since a file name cannot hold it). */
HANDLE WINAPI CreateFileMappingW(HANDLE hFile, LPSECURITY_ATTRIBUTES lpAttributes,
                                 DWORD flProtect, DWORD dwMaximumSizeHigh,
                                 DWORD dwMaximumSizeLow, LPCWSTR lpName);

/*
 * OpenFileMapping: opens an existing named section (ERROR_FILE_NOT_FOUND if none).
 * FILE_MAP_WRITE / FILE_MAP_ALL_ACCESS open it for writing, FILE_MAP_READ and
 * FILE_MAP_COPY for reading; the mode bits decide (ERROR_ACCESS_DENIED).
 */
HANDLE WINAPI OpenFileMappingA(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCSTR lpName);
HANDLE WINAPI OpenFileMappingW(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCWSTR lpName);

/*
 * MapViewOfFile: maps dwNumberOfBytesToMap bytes (0: to the section's end) from the
 * offset. FILE_MAP_WRITE / ALL_ACCESS: shared read-write (the handle must be
 * PAGE_READWRITE); FILE_MAP_READ: shared read-only; FILE_MAP_COPY: private copy-on-write
 * (MAP_PRIVATE), whose writes no one else sees.
 * Differences: the offset needs page alignment (4 KiB), not Windows' 64 KiB allocation
 * granularity (ERROR_MAPPED_ALIGNMENT otherwise). The section's size is its current
 * size, including growth by other processes since the handle was opened. A view beyond
 * the end is ERROR_ACCESS_DENIED, as on Windows; a section still of size 0 is
 * ERROR_FILE_INVALID. Views do not grow: map again after growing.
 */
LPVOID WINAPI MapViewOfFile(HANDLE hFileMappingObject, DWORD dwDesiredAccess,
                            DWORD dwFileOffsetHigh, DWORD dwFileOffsetLow,
                            SIZE_T dwNumberOfBytesToMap);
/* The same at lpBaseAddress (if not NULL): ERROR_INVALID_ADDRESS if that range is in use
 * or not page-aligned. Nothing already mapped there is ever replaced. */
LPVOID WINAPI MapViewOfFileEx(HANDLE hFileMappingObject, DWORD dwDesiredAccess,
                              DWORD dwFileOffsetHigh, DWORD dwFileOffsetLow,
                              SIZE_T dwNumberOfBytesToMap, LPVOID lpBaseAddress);
/* Unmaps a view by the address MapViewOfFile returned (ERROR_INVALID_ADDRESS otherwise). */
BOOL WINAPI UnmapViewOfFile(LPCVOID lpBaseAddress);
/* msync(MS_SYNC) of the range (0 bytes: to the end of its view). Windows only starts the
 * write; this waits for it, which is stronger. */
BOOL WINAPI FlushViewOfFile(LPCVOID lpBaseAddress, SIZE_T dwNumberOfBytesToFlush);

/* Closes a section handle, or a file handle made by HANDLE_FROM_FD (close(2)). */
BOOL WINAPI CloseHandle(HANDLE hObject);

/* The calling thread's last error, as on Windows. */
DWORD WINAPI GetLastError(void);
void WINAPI SetLastError(DWORD dwErrCode);

/* Not Windows: the file descriptor a section handle holds (for fchmod, flock, fstat), or
 * -1 with ERROR_INVALID_HANDLE. It stays the handle's: do not close it. */
int sections_handle_fd(HANDLE hFileMappingObject);

#ifdef UNICODE
#define CreateFileMapping CreateFileMappingW
#define OpenFileMapping OpenFileMappingW
#else
#define CreateFileMapping CreateFileMappingA
#define OpenFileMapping OpenFileMappingA
#endif

#ifdef __cplusplus
}
#endif

#endif /* SECTIONS_H */

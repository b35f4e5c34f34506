/* Tiny C shim: the static-inline helpers and macros of libext2fs that bindgen cannot bind. */
#ifndef LINUXDISK_EXT2FS_SHIM_H
#define LINUXDISK_EXT2FS_SHIM_H
#include <ext2fs/ext2fs.h>

/* The library's message for an error code (com_err's error_message). */
const char *ldk_error_message(errcode_t code);
/* ext2fs_has_feature_metadata_csum */
int ldk_has_metadata_csum(ext2_filsys fs);
/* EXT2_INODE_SIZE(fs->super) */
int ldk_inode_size(ext2_filsys fs);
/* The unix I/O manager (a global variable in the library). */
io_manager ldk_unix_io_manager(void);
/* ext2fs_dir_block_csum / EXT2_DIR_REC_LEN and the dirent tail helpers. */
void ldk_initialize_dirent_tail(ext2_filsys fs, void *block);
/* Sets name length and file type of a directory entry (ext2fs_dirent_set_*). */
void ldk_dirent_set(struct ext2_dir_entry *d, unsigned name_len, unsigned file_type);
#endif

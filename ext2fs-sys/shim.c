/* Tiny C shim: see shim.h. Nothing here but calls of static-inline helpers. */
#include "shim.h"
#include <et/com_err.h>
#include <ext2fs/ext2_err.h>

const char *ldk_error_message(errcode_t code)
{
	static int registered;
	if (!registered) {
		/* The library registers its table only in some entry points (ext2fs_open, ...). */
		initialize_ext2_error_table();
		registered = 1;
	}
	return error_message(code);
}
int ldk_has_metadata_csum(ext2_filsys fs) { return ext2fs_has_feature_metadata_csum(fs->super); }
int ldk_inode_size(ext2_filsys fs) { return EXT2_INODE_SIZE(fs->super); }
io_manager ldk_unix_io_manager(void) { return unix_io_manager; }
void ldk_initialize_dirent_tail(ext2_filsys fs, void *block)
{
	struct ext2_dir_entry_tail *t = EXT2_DIRENT_TAIL(block, fs->blocksize);
	ext2fs_initialize_dirent_tail(fs, t);
}
void ldk_dirent_set(struct ext2_dir_entry *d, unsigned name_len, unsigned file_type)
{
	ext2fs_dirent_set_name_len(d, name_len);
	ext2fs_dirent_set_file_type(d, file_type);
}

/* Everything the bindings cover: libext2fs's public API and on-disk types. */
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <ext2fs/ext2_ext_attr.h>
#include "shim.h"

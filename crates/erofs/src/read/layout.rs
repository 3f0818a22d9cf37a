//! The block layout of an inode's data: flat blocks or a chunk table
//! (block map or chunk indexes on devices), checked as the kernel would
//! map it, and read into [`FileData`] for a regular file.

use crate::error::{Error, ErrorKind, Result};
use crate::format::{
    self, mode, CHUNK_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN, NULL_ADDR,
};
use crate::tree::FileData;

use super::image::{bad, Budget, Image, Node, BS};

/// Chunk table entries read at once while checking.
const TABLE_PIECE: u64 = 8192;

impl Image<'_> {
    /// A chunk-based file's chunk size (log2, in blocks), chunk count, entry
    /// size and where its table starts, the table checked to lie inside
    /// the image.
    fn chunk_table(&self, n: &Node) -> Result<(u8, u64, u64, u64)> {
        let format = (n.raw.i_u & 0xffff) as u16;
        if n.raw.i_u >> 16 != 0 || format & !(CHUNK_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(bad(format!("the chunk format {:#x}", n.raw.i_u)));
        }
        let bits = (format & CHUNK_BLKBITS_MASK) as u8;
        let count = n.raw.size.div_ceil(BS << bits);
        let unit = if format & CHUNK_FORMAT_INDEXES != 0 {
            8
        } else {
            4
        };
        let at = n.after.div_ceil(unit) * unit;
        count
            .checked_mul(unit)
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= self.len)
            .ok_or_else(|| bad("a chunk table runs past the image's end"))?;
        Ok((bits, count, unit, at))
    }

    /// Checks chunk `c` (of `1 << bits` blocks) of a file of `size` bytes:
    /// a hole, or blocks inside its device.
    fn check_chunk(&self, size: u64, bits: u8, c: u64, dev: u16, blk: u32) -> Result<()> {
        if blk == NULL_ADDR {
            return Ok(());
        }
        let limit = match dev {
            0 => self.sb.blocks as u64,
            d => match self.devices.get(d as usize - 1) {
                Some(s) => s.blocks as u64,
                None => return Err(bad(format!("a chunk on device {d}, which the table lacks"))),
            },
        };
        let per = 1u64 << bits;
        let span = (size.div_ceil(BS) - c * per).min(per);
        if blk as u64 + span > limit {
            return Err(bad(format!(
                "chunk {c} ({span} blocks from block {blk}) runs past the end of device {dev}"
            )));
        }
        Ok(())
    }

    /// Reads a chunk table `piece` entries at a time, checking each entry.
    fn for_each_chunk(
        &self,
        n: &Node,
        piece: u64,
        f: &mut dyn FnMut(u16, u32) -> Result<()>,
    ) -> Result<u8> {
        let (bits, count, unit, at) = self.chunk_table(n)?;
        let mut c = 0;
        while c < count {
            let k = (count - c).min(piece);
            let table = self.read(at + c * unit, k * unit)?;
            for e in table.chunks(unit as usize) {
                let (dev, blk) = if unit == 8 {
                    (format::read_u16(e, 2), format::read_u32(e, 4))
                } else {
                    (0, format::read_u32(e, 0))
                };
                self.check_chunk(n.raw.size, bits, c, dev, blk)?;
                f(dev, blk)?;
                c += 1;
            }
        }
        Ok(bits)
    }

    /// A regular file's layout, its chunk table paid for from `budget`
    /// before it is read.
    pub(super) fn file_data(&self, n: &Node, budget: &mut Budget) -> Result<FileData> {
        let size = n.raw.size;
        match n.raw.layout {
            LAYOUT_FLAT_PLAIN => {
                if size == 0 {
                    return Ok(FileData::Flat { blkaddr: NULL_ADDR });
                }
                self.blocks_inside(n.raw.i_u, size.div_ceil(BS))?;
                Ok(FileData::Flat { blkaddr: n.raw.i_u })
            }
            LAYOUT_FLAT_INLINE => Err(Error::new(
                ErrorKind::InvalidImage,
                "a file with an inline tail (chunk indexes cannot point at it)",
            )),
            LAYOUT_CHUNK_BASED => {
                let (_, count, unit, _) = self.chunk_table(n)?;
                budget.spend(count * unit)?;
                let piece = count.max(1);
                if unit == 8 {
                    let mut chunks = Vec::with_capacity(count as usize);
                    let bits = self.for_each_chunk(n, piece, &mut |d, b| {
                        chunks.push((d, b));
                        Ok(())
                    })?;
                    Ok(FileData::Indexes {
                        chunk_bits: bits,
                        chunks,
                    })
                } else {
                    let mut blocks = Vec::with_capacity(count as usize);
                    let bits = self.for_each_chunk(n, piece, &mut |_, b| {
                        blocks.push(b);
                        Ok(())
                    })?;
                    Ok(FileData::BlockMap {
                        chunk_bits: bits,
                        blocks,
                    })
                }
            }
            l => Err(bad(format!(
                "a file with the data layout {l} (compressed files are not read)"
            ))),
        }
    }

    /// Checks an inode's data as the kernel would map it, reading no file
    /// data: directories and symlinks flat and inside the image, regular
    /// files' blocks or every chunk inside their devices, other types
    /// without data.
    pub fn check_layout(&self, n: &Node) -> Result<()> {
        let r = &n.raw;
        match r.mode & mode::S_IFMT {
            mode::S_IFDIR => {
                self.flat_extent(n)?;
            }
            mode::S_IFLNK => {
                self.content(n)?;
            }
            mode::S_IFREG => match r.layout {
                LAYOUT_CHUNK_BASED => {
                    self.for_each_chunk(n, TABLE_PIECE, &mut |_, _| Ok(()))?;
                }
                _ => {
                    self.file_data(n, &mut Budget::unbounded())?;
                }
            },
            _ => {
                if r.size != 0 || r.layout != LAYOUT_FLAT_PLAIN {
                    return Err(bad("a device, FIFO or socket with data"));
                }
            }
        }
        Ok(())
    }
}

//! One logical unit as a sans-IO command executor.
//!
//! [`LogicalUnit::execute`] takes a CDB and the I_T nexus it came on and
//! returns an [`Outcome`]: inline Data-In, a byte range of the backing store
//! to send, a request for Data-Out and what to do with it, a flush, ranges to
//! deallocate, or CHECK CONDITION with sense. The logical unit never touches
//! the backing store and never holds image bytes; the engine does the I/O the
//! outcome names and answers GOOD, or the MEDIUM ERROR sense of
//! [`Sense::write_error`] / [`Sense::unrecovered_read_error`] when it fails.
//!
//! Call order, for one command:
//! 1. [`execute`](LogicalUnit::execute) with the CDB, then
//!    [`Outcome::with_edtl`] with the Expected Data Transfer Length;
//! 2. for [`Outcome::DataOut`], collect exactly `len` bytes of Data-Out, then
//!    - [`AfterDataOut::Write`]: write them at `offset` (fdatasync if `fua`);
//!    - [`AfterDataOut::Compare`]: compare them with the store;
//!    - [`AfterDataOut::Parameters`]: hand them to
//!      [`handle_parameters`](LogicalUnit::handle_parameters), which returns
//!      the final outcome (never another `DataOut`);
//! 3. report residuals from [`Outcome::transfer`]: the bytes the command
//!    moves (and which way) against the Expected Data Transfer Length.
//!    A CHECK CONDITION moves nothing, so its residual is the whole EDTL.
//!
//! Out of band: [`set_size`](LogicalUnit::set_size) when the store grew or
//! shrank, [`reset`](LogicalUnit::reset) on LOGICAL UNIT RESET or TARGET
//! WARM RESET, [`nexus_lost`](LogicalUnit::nexus_lost) when a session ends.
//!
//! Unit attention conditions (SAM-5 §5.14, SPC-4 §5.14) are kept per I_T
//! nexus: a nexus seen for the first time starts with POWER ON, RESET, OR BUS
//! DEVICE RESET OCCURRED; a size change queues CAPACITY DATA HAS CHANGED; a
//! MODE SELECT from one nexus queues MODE PARAMETERS CHANGED for the others.
//! Each is reported once, to the first command other than INQUIRY, REPORT
//! LUNS and REQUEST SENSE (which reports and clears it as sense data).
//!
//! Not done: reservations (PERSISTENT RESERVE is answered as an unknown
//! opcode), protection information, NOT READY after STOP (START STOP UNIT is
//! accepted and changes nothing), per-command task attributes (the iSCSI layer
//! orders commands).

use super::cdb::{self, ByteCheck, Cdb, Direction, Range, Rw, Verify, WriteSame};
use super::sense::{asc, Sense, SenseKey};
use super::{inquiry, mode, opcodes, target};

/// Logical block length. Fixed: boot firmware and most initiators assume it.
pub const BLOCK_SIZE: u32 = 512;

/// log2 of [`BLOCK_SIZE`].
const BLOCK_SHIFT: u32 = 9;

/// MAXIMUM TRANSFER LENGTH of the block limits page, in blocks (32 MiB). A
/// READ or WRITE asking for more is refused (SBC-3 §6.6.4), which bounds the
/// buffers a single WRITE can make the session hold.
pub const MAX_TRANSFER_BLOCKS: u32 = 1 << 16;

/// MAXIMUM WRITE SAME LENGTH, in blocks (1 GiB): one WRITE SAME is one
/// unit of engine work, so its size is bounded.
pub const MAX_WRITE_SAME_BLOCKS: u32 = 1 << 21;

/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT: bounds the parameter list an UNMAP
/// may send (8 + 16 * 256 bytes) and the ranges one command deallocates.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// MAXIMUM UNMAP LBA COUNT: hole punching costs little whatever the size, so
/// this only keeps the number sane for initiators that check it (1M blocks).
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 20;

/// Nexuses remembered per logical unit for their unit attentions. A session
/// layer that forgets to call [`LogicalUnit::nexus_lost`] would otherwise grow
/// the list forever; past this count the oldest entry is dropped (that nexus
/// then sees POWER ON again, which is harmless).
pub const MAX_NEXUSES: usize = 1024;

/// An I_T nexus (initiator port to target port), as the session layer names
/// it; unit attentions are kept per nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexusId(pub u64);

/// What the configuration and the backing store say about one logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuConfig {
    /// The target's name; with `lun` it seeds the unit serial number and NAA.
    pub target_iqn: String,
    /// This unit's LUN, also its index in the target's list.
    pub lun: u16,
    /// Size of the backing store; a partial last block is not exposed.
    pub size_bytes: u64,
    pub read_only: bool,
    /// The store can deallocate ranges so that they read back as zeros
    /// (hole punching on files, discard-zeroes on zvols): enables UNMAP, WRITE
    /// SAME with UNMAP, and LBPME/LBPRZ.
    pub unmap: bool,
}

/// A byte range of the backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// What to do with Data-Out once it has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterDataOut {
    /// Write the bytes at `offset` of the store; with `fua`, make them durable
    /// (fdatasync) before GOOD. A failure is [`Sense::write_error`].
    Write { offset: u64, fua: bool },
    /// VERIFY with BYTCHK: compare the bytes with `extent` of the store. With
    /// `repeat`, the Data-Out is one block compared with every block of the
    /// extent. A difference is [`Sense::miscompare`] with its offset.
    Compare { extent: Extent, repeat: bool },
    /// A parameter list for [`LogicalUnit::handle_parameters`].
    Parameters(Parameters),
}

/// Which command's parameter list is arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameters {
    Unmap,
    ModeSelect {
        ten: bool,
    },
    /// The pattern block of WRITE SAME for `extent`.
    WriteSame {
        extent: Extent,
        unmap: bool,
    },
}

/// How a command proceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Status GOOD, no data.
    Good,
    /// Status GOOD after these bytes as Data-In, already cut to the
    /// allocation length (so possibly empty).
    Data(Vec<u8>),
    /// Status GOOD after bytes `[offset, offset + len)` of the store as
    /// Data-In; the engine sends them by sendfile, mmap or pread.
    Read(Extent),
    /// Receive `len` bytes of Data-Out, then do `then`.
    DataOut { len: u64, then: AfterDataOut },
    /// Make everything written durable (fdatasync), then GOOD.
    Flush,
    /// Deallocate these ranges (punch holes; they read back as zeros), then
    /// GOOD. Never empty.
    Deallocate(Vec<Extent>),
    /// Write `pattern` (one block) into every block of `extent`, then GOOD.
    WriteSame { pattern: Vec<u8>, extent: Extent },
    /// Status CHECK CONDITION with this sense data.
    Check(Sense),
}

/// The data a command moves, for the session's residual arithmetic: it
/// compares `len` with the Expected Data Transfer Length and reports the
/// difference as underflow or overflow (RFC 7143 §11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub direction: Direction,
    pub len: u64,
}

impl Outcome {
    /// Holds the outcome against the initiator's Expected Data Transfer
    /// Length where SBC-3 leaves no room for residuals: a WRITE SAME whose
    /// Data-Out is not exactly one block is refused (what LIO does, and what
    /// libiscsi's WriteSame*.InvalidDataOutSize expect). Every other mismatch
    /// is the session's to report as underflow or overflow.
    pub fn with_edtl(self, edtl: u64) -> Outcome {
        match self {
            Outcome::DataOut {
                len,
                then: AfterDataOut::Parameters(Parameters::WriteSame { .. }),
            } if len != edtl => Outcome::Check(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_CDB,
            )),
            other => other,
        }
    }

    /// How many bytes move and which way, if the command completes as told.
    pub fn transfer(&self) -> Transfer {
        let (direction, len) = match self {
            Outcome::Data(d) => (Direction::In, d.len() as u64),
            Outcome::Read(e) => (Direction::In, e.len),
            Outcome::DataOut { len, .. } => (Direction::Out, *len),
            _ => (Direction::None, 0),
        };
        Transfer { direction, len }
    }
}

/// Pending unit attentions of one nexus, as bits in priority order.
const UA_POWER_ON: u8 = 1 << 0;
const UA_CAPACITY_CHANGED: u8 = 1 << 1;
const UA_MODE_CHANGED: u8 = 1 << 2;
const UA_LUNS_CHANGED: u8 = 1 << 3;

#[derive(Debug, Clone, Copy)]
struct Nexus {
    id: NexusId,
    pending: u8,
}

/// A logical unit: its configuration, capacity and per-nexus state.
#[derive(Debug, Clone)]
pub struct LogicalUnit {
    config: LuConfig,
    blocks: u64,
    /// Software write protect of the control mode page, set by MODE SELECT.
    swp: bool,
    serial: String,
    naa: u64,
    nexuses: Vec<Nexus>,
}

impl LogicalUnit {
    pub fn new(config: LuConfig) -> LogicalUnit {
        let (serial, naa) = inquiry::identity(&config.target_iqn, config.lun);
        LogicalUnit {
            blocks: config.size_bytes >> BLOCK_SHIFT,
            config,
            swp: false,
            serial,
            naa,
            nexuses: Vec::new(),
        }
    }

    pub fn config(&self) -> &LuConfig {
        &self.config
    }

    /// Number of logical blocks exposed.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Unit serial number (VPD page 80h), stable for a target IQN and LUN.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// NAA locally assigned identifier (VPD page 83h).
    pub fn naa(&self) -> u64 {
        self.naa
    }

    /// Refuses writes: read-only by configuration or by software write protect.
    pub fn write_protected(&self) -> bool {
        self.config.read_only || self.swp
    }

    pub(super) fn set_swp(&mut self, swp: bool) {
        self.swp = swp;
    }

    pub(super) fn swp(&self) -> bool {
        self.swp
    }

    /// The store's size changed: every nexus is told CAPACITY DATA HAS CHANGED.
    pub fn set_size(&mut self, size_bytes: u64) {
        self.config.size_bytes = size_bytes;
        let blocks = size_bytes >> BLOCK_SHIFT;
        if blocks != self.blocks {
            self.blocks = blocks;
            self.post(UA_CAPACITY_CHANGED, None);
        }
    }

    /// LOGICAL UNIT RESET or a target reset (SAM-5 §7.7): volatile state goes
    /// back to its power-on value and every nexus is told so.
    pub fn reset(&mut self) {
        self.swp = false;
        self.post(UA_POWER_ON, None);
    }

    /// The target's LUN inventory changed (SPC-4 §6.27).
    pub fn luns_changed(&mut self) {
        self.post(UA_LUNS_CHANGED, None);
    }

    /// The session of this nexus is gone; forget its unit attentions.
    pub fn nexus_lost(&mut self, nexus: NexusId) {
        self.nexuses.retain(|n| n.id != nexus);
    }

    fn post(&mut self, ua: u8, except: Option<NexusId>) {
        for n in self.nexuses.iter_mut().filter(|n| Some(n.id) != except) {
            n.pending |= ua;
        }
    }

    fn nexus(&mut self, id: NexusId) -> &mut Nexus {
        let idx = match self.nexuses.iter().position(|n| n.id == id) {
            Some(idx) => idx,
            None => {
                if self.nexuses.len() >= MAX_NEXUSES {
                    self.nexuses.remove(0);
                }
                self.nexuses.push(Nexus {
                    id,
                    pending: UA_POWER_ON,
                });
                self.nexuses.len() - 1
            }
        };
        // Invariant: idx was just found or just pushed.
        &mut self.nexuses[idx]
    }

    /// Takes the highest-priority pending unit attention of `nexus`.
    pub fn take_unit_attention(&mut self, nexus: NexusId) -> Option<Sense> {
        let n = self.nexus(nexus);
        let bit = n.pending & n.pending.wrapping_neg();
        // A power-on supersedes what was queued before it (SAM-5 §5.14).
        n.pending = if bit == UA_POWER_ON {
            0
        } else {
            n.pending & !bit
        };
        let code = match bit {
            0 => return None,
            UA_POWER_ON => asc::POWER_ON_RESET,
            UA_CAPACITY_CHANGED => asc::CAPACITY_DATA_HAS_CHANGED,
            UA_MODE_CHANGED => asc::MODE_PARAMETERS_CHANGED,
            _ => asc::REPORTED_LUNS_DATA_HAS_CHANGED,
        };
        Some(Sense::new(SenseKey::UnitAttention, code))
    }

    /// REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED (SPC-4 §6.27).
    pub(super) fn clear_luns_changed(&mut self, nexus: NexusId) {
        self.nexus(nexus).pending &= !UA_LUNS_CHANGED;
    }

    /// Executes one command.
    pub fn execute(&mut self, nexus: NexusId, cdb: &[u8]) -> Outcome {
        let op = cdb.first().copied();
        let exempt = matches!(
            op,
            Some(cdb::opcode::INQUIRY | cdb::opcode::REPORT_LUNS | cdb::opcode::REQUEST_SENSE)
        );
        if !exempt {
            if let Some(ua) = self.take_unit_attention(nexus) {
                return Outcome::Check(ua);
            }
        }
        match Cdb::parse(cdb) {
            Ok(cdb) => self.dispatch(nexus, cdb),
            Err(sense) => Outcome::Check(sense),
        }
    }

    fn dispatch(&mut self, nexus: NexusId, cdb: Cdb) -> Outcome {
        let result = match cdb {
            Cdb::TestUnitReady => Ok(Outcome::Good),
            Cdb::RequestSense { desc, alloc_len } => self.request_sense(nexus, desc, alloc_len),
            Cdb::Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => inquiry::respond(self, evpd, page_code, alloc_len),
            Cdb::ModeSense(ms) => mode::sense(self, &ms),
            Cdb::ModeSelect(ms) => mode::select_cdb(&ms),
            Cdb::StartStopUnit { loej, .. } => {
                // The medium is not removable (RMB=0): loading or ejecting it
                // is an invalid request (SBC-3 §5.25). Power conditions and
                // START are accepted; the store is always ready.
                if loej {
                    Err(Sense::invalid_field_in_cdb(4, Some(1)))
                } else {
                    Ok(Outcome::Good)
                }
            }
            Cdb::ReadCapacity10 => Ok(self.read_capacity10()),
            Cdb::ReadCapacity16 { alloc_len } => Ok(self.read_capacity16(alloc_len)),
            Cdb::Read(rw) => self.read(&rw),
            Cdb::Write(rw) | Cdb::WriteAndVerify(rw) => self.write(&rw),
            Cdb::Verify(v) => self.verify(&v),
            Cdb::WriteSame(ws) => self.write_same(&ws),
            Cdb::Unmap { param_len } => self.unmap(param_len),
            Cdb::SynchronizeCache(r) => self.range(&r).map(|_| {
                if self.config.read_only {
                    Outcome::Good
                } else {
                    Outcome::Flush
                }
            }),
            // A hint; the page cache does this on its own.
            Cdb::PreFetch(r) => self.range(&r).map(|_| Outcome::Good),
            Cdb::ReportLuns {
                select_report,
                alloc_len,
            } => {
                // Alone, a unit knows only itself; target::Target answers for
                // the whole inventory.
                self.clear_luns_changed(nexus);
                target::report_luns(select_report, alloc_len, &[self.config.lun])
            }
            Cdb::ReportSupportedOperationCodes(req) => opcodes::report(&req, self.config.unmap),
            Cdb::Unknown(_) => Err(Sense::invalid_opcode()),
        };
        result.unwrap_or_else(Outcome::Check)
    }

    /// Completes a command whose [`AfterDataOut::Parameters`] have arrived.
    /// `data` is the parameter list as received: normally the `len` bytes
    /// the outcome asked for; a shorter one is the initiator's error and is
    /// answered with sense, never a panic.
    pub fn handle_parameters(
        &mut self,
        nexus: NexusId,
        params: Parameters,
        data: &[u8],
    ) -> Outcome {
        let result = match params {
            Parameters::Unmap => self.unmap_list(data),
            Parameters::ModeSelect { ten } => {
                let before = self.swp;
                let r = mode::select(self, ten, data).map(|()| Outcome::Good);
                if self.swp != before {
                    // SPC-4 §5.14: other nexuses learn of changed mode parameters.
                    self.post(UA_MODE_CHANGED, Some(nexus));
                }
                r
            }
            Parameters::WriteSame { extent, unmap } => self.write_same_pattern(extent, unmap, data),
        };
        result.unwrap_or_else(Outcome::Check)
    }

    fn request_sense(
        &mut self,
        nexus: NexusId,
        desc: bool,
        alloc_len: u8,
    ) -> Result<Outcome, Sense> {
        // Descriptor format sense is not offered (D_SENSE=0), so DESC=1 is
        // refused rather than silently answered in fixed format (SPC-4 §6.29).
        if desc {
            return Err(Sense::invalid_field_in_cdb(1, Some(0)));
        }
        let sense = self.take_unit_attention(nexus).unwrap_or(Sense::no_sense());
        Ok(Outcome::Data(truncate(
            sense.encode().to_vec(),
            alloc_len.into(),
        )))
    }

    fn read_capacity10(&self) -> Outcome {
        // SBC-3 §5.18: the last LBA, or FFFFFFFFh when it needs READ CAPACITY(16).
        let last = u32::try_from(self.blocks.saturating_sub(1)).unwrap_or(u32::MAX);
        let mut d = Vec::with_capacity(8);
        d.extend_from_slice(&last.to_be_bytes());
        d.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
        Outcome::Data(d)
    }

    fn read_capacity16(&self, alloc_len: u32) -> Outcome {
        let mut d = vec![0u8; 32];
        d[0..8].copy_from_slice(&self.blocks.saturating_sub(1).to_be_bytes());
        d[8..12].copy_from_slice(&BLOCK_SIZE.to_be_bytes());
        if self.config.unmap {
            // LBPME and LBPRZ (SBC-3 §5.19): thin provisioned, unmapped
            // blocks read as zeros.
            d[14] = 0xc0;
        }
        Outcome::Data(truncate(d, alloc_len as usize))
    }

    /// The extent of `blocks` blocks at `lba`, or LBA OUT OF RANGE; no
    /// arithmetic here can wrap (SBC-3 §4.5).
    pub fn extent(&self, lba: u64, blocks: u64) -> Result<Extent, Sense> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.blocks => Ok(Extent {
                // Cannot overflow: lba + blocks <= size_bytes / 512.
                offset: lba << BLOCK_SHIFT,
                len: blocks << BLOCK_SHIFT,
            }),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    fn transfer_extent(&self, lba: u64, blocks: u32) -> Result<Extent, Sense> {
        let extent = self.extent(lba, blocks.into())?;
        if blocks > MAX_TRANSFER_BLOCKS {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_CDB,
            ));
        }
        Ok(extent)
    }

    fn read(&self, rw: &Rw) -> Result<Outcome, Sense> {
        let extent = self.transfer_extent(rw.lba, rw.blocks)?;
        // FUA on a read asks to bypass a volatile cache; the page cache is
        // coherent with the store, so there is nothing to bypass.
        Ok(if extent.len == 0 {
            Outcome::Good
        } else {
            Outcome::Read(extent)
        })
    }

    fn write(&self, rw: &Rw) -> Result<Outcome, Sense> {
        if self.write_protected() {
            return Err(Sense::write_protected());
        }
        let extent = self.transfer_extent(rw.lba, rw.blocks)?;
        if extent.len == 0 {
            return Ok(Outcome::Good);
        }
        Ok(Outcome::DataOut {
            len: extent.len,
            then: AfterDataOut::Write {
                offset: extent.offset,
                fua: rw.fua,
            },
        })
    }

    fn verify(&self, v: &Verify) -> Result<Outcome, Sense> {
        let extent = self.transfer_extent(v.lba, v.blocks)?;
        let (len, repeat) = match v.bytchk {
            // Medium verification: the store has no media errors to find
            // that a read would not report anyway.
            ByteCheck::None => return Ok(Outcome::Good),
            ByteCheck::Blocks => (extent.len, false),
            ByteCheck::OneBlock => (u64::from(BLOCK_SIZE), true),
        };
        if extent.len == 0 {
            return Ok(Outcome::Good);
        }
        Ok(Outcome::DataOut {
            len,
            then: AfterDataOut::Compare { extent, repeat },
        })
    }

    fn write_same(&self, ws: &WriteSame) -> Result<Outcome, Sense> {
        if self.write_protected() {
            return Err(Sense::write_protected());
        }
        // The LBA itself first, so a zero-block request past the end is
        // reported as out of range (what libiscsi's suite checks).
        self.extent(ws.lba, 0)?;
        if ws.blocks == 0 {
            // WSNZ=1 in the block limits page: "to the end of the medium" is
            // refused rather than turned into a whole-disk write.
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_CDB,
            ));
        }
        let extent = self.extent(ws.lba, ws.blocks.into())?;
        if ws.blocks > MAX_WRITE_SAME_BLOCKS {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_CDB,
            ));
        }
        if ws.ndob {
            return self.write_same_pattern(extent, ws.unmap, &[0u8; BLOCK_SIZE as usize]);
        }
        Ok(Outcome::DataOut {
            len: BLOCK_SIZE.into(),
            then: AfterDataOut::Parameters(Parameters::WriteSame {
                extent,
                unmap: ws.unmap,
            }),
        })
    }

    fn write_same_pattern(
        &self,
        extent: Extent,
        unmap: bool,
        data: &[u8],
    ) -> Result<Outcome, Sense> {
        let Some(pattern) = data.get(..BLOCK_SIZE as usize) else {
            return Err(Sense::parameter_list_length_error());
        };
        // SBC-3 §5.40: with UNMAP set the initiator asks for deallocation;
        // the blocks then read as zeros (LBPRZ=1) whatever the pattern. LIO
        // and tgt do the same, and libiscsi's UnmapUntilEnd checks for zeros
        // after a WRITE SAME of FFh with UNMAP.
        if unmap && self.config.unmap {
            return Ok(Outcome::Deallocate(vec![extent]));
        }
        Ok(Outcome::WriteSame {
            pattern: pattern.to_vec(),
            extent,
        })
    }

    fn unmap(&self, param_len: u16) -> Result<Outcome, Sense> {
        if !self.config.unmap {
            return Err(Sense::invalid_opcode());
        }
        if self.write_protected() {
            return Err(Sense::write_protected());
        }
        match param_len {
            // SBC-3 §5.28: a zero length is not an error; nothing happens.
            0 => Ok(Outcome::Good),
            1..=7 => Err(Sense::parameter_list_length_error()),
            len => Ok(Outcome::DataOut {
                len: len.into(),
                then: AfterDataOut::Parameters(Parameters::Unmap),
            }),
        }
    }

    /// The UNMAP parameter list (SBC-3 §5.28.2): an 8-byte header, then
    /// 16-byte block descriptors.
    fn unmap_list(&self, data: &[u8]) -> Result<Outcome, Sense> {
        let Some((header, rest)) = data.split_first_chunk::<8>() else {
            return Err(Sense::parameter_list_length_error());
        };
        // An incomplete last descriptor is ignored, as is anything past the
        // announced descriptor data or the bytes that actually came.
        let bd_len = usize::from(u16::from_be_bytes([header[2], header[3]])).min(rest.len());
        let count = bd_len / 16;
        if count > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::invalid_field_in_parameter_list(2));
        }
        let mut extents = Vec::with_capacity(count);
        let mut total: u64 = 0;
        for d in rest.chunks_exact(16).take(count) {
            let Some(&[l0, l1, l2, l3, l4, l5, l6, l7, n0, n1, n2, n3]) = d.first_chunk::<12>()
            else {
                continue; // chunks_exact yields 16 bytes; never taken
            };
            let lba = u64::from_be_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
            let num = u32::from_be_bytes([n0, n1, n2, n3]);
            let extent = self.extent(lba, num.into())?;
            // SBC-3 §5.28: the blocks of all descriptors together count
            // against MAXIMUM UNMAP LBA COUNT.
            total += u64::from(num);
            if total > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Sense::invalid_field_in_parameter_list(8));
            }
            if extent.len > 0 {
                extents.push(extent);
            }
        }
        Ok(if extents.is_empty() {
            Outcome::Good
        } else {
            Outcome::Deallocate(extents)
        })
    }

    /// SYNCHRONIZE CACHE and PRE-FETCH: 0 blocks means "to the end".
    fn range(&self, r: &Range) -> Result<Extent, Sense> {
        let blocks = match r.blocks {
            0 => self.blocks.saturating_sub(r.lba),
            n => n.into(),
        };
        self.extent(r.lba, blocks)
    }
}

/// Cuts Data-In to the allocation length (SPC-4 §4.2.5.6): the length fields
/// inside still describe the whole data.
pub(super) fn truncate(mut data: Vec<u8>, alloc_len: usize) -> Vec<u8> {
    data.truncate(alloc_len);
    data
}

#[cfg(test)]
mod tests;

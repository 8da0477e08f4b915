pub mod scsi;

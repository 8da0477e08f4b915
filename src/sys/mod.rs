//! Operating-system calls, the only home of `unsafe` in dls.

//! What a run leaves behind: [`report`] the typed report (`report.json` and the printed tables), [`plot`] the PNG
//! charts, and [`staged`] the all-or-nothing output folders they are written into.

pub mod plot;
pub mod report;
pub mod staged;

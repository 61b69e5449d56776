//! The default data set compiled into the binary: real daily prices of the 29 STORM DJ30 stocks
//! (2000-01-03..2024-03-08) and the Dow Jones index. Provenance: data/README.md.

pub const DJ30_CSV_GZ: &[u8] =
    include_bytes!("../../../data/dj30/dj30_storm29_daily_2000-01-03_2024-03-08.csv.gz");

pub const DJI_CSV_GZ: &[u8] =
    include_bytes!("../../../data/dj30/DJI_spliced_2000-01-03_2025-10-31.csv.gz");

//! Log lines in the Go daemon's shape: `LEVEL YYYY/MM/DD HH:MM:SS message`
//! on stdout.

use std::io::Write;
use std::time::SystemTime;

use crate::gotime::log_stamp;

/// Installs the logger once; later calls only change the level.
pub fn init(level: log::LevelFilter) {
    // Libraries (rustls, quinn) log their internals at debug level; only
    // their warnings and errors belong in a receptor log. Our own lines
    // all pass this filter, so that `set_level` alone decides (a reload
    // may raise the level).
    // A second call finds the logger installed; only the level changes.
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .filter_module("receptor", log::LevelFilter::Trace)
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            let name = match record.level() {
                log::Level::Error => "ERROR",
                log::Level::Warn => "WARNING",
                log::Level::Info => "INFO",
                log::Level::Debug | log::Level::Trace => "DEBUG",
            };
            let msg = record.args().to_string();
            let newline = if msg.ends_with('\n') { "" } else { "\n" };
            write!(
                buf,
                "{name} {} {msg}{newline}",
                log_stamp(SystemTime::now())
            )
        })
        .try_init();
    set_level(level);
}

/// Sets the most verbose level logged from now on.
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

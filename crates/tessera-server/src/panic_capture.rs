//! Turns panics into log events. A panic hook records the message, location and backtrace in a
//! thread-local; the request middleware, which catches the unwind on the same thread, picks
//! them up together with the request id. The hook also logs through `tracing`, inside the
//! request's span, instead of printing to stderr without context.

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::sync::Once;

/// What the hook saw of the last panic on this thread.
#[derive(Debug, Clone)]
pub struct PanicReport {
    pub message: String,
    pub location: String,
    pub backtrace: String,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the hook once per process.
pub fn install() {
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // Panic messages may quote data; they pass the redactor like any log line.
            let message = tessera_domain::redact::redact_text(&payload_message(info.payload()));
            let location = info
                .location()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "unknown".into());
            let backtrace = Backtrace::force_capture().to_string();
            tracing::error!(panic.message = %message, panic.location = %location, "panic");
            LAST_PANIC.with(|p| {
                *p.borrow_mut() = Some(PanicReport {
                    message,
                    location,
                    backtrace,
                })
            });
        }));
    });
}

/// The report of the panic just caught on this thread, if the hook recorded one.
pub fn take_report(payload: &(dyn std::any::Any + Send)) -> PanicReport {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| PanicReport {
            message: tessera_domain::redact::redact_text(&payload_message(payload)),
            location: "unknown".into(),
            backtrace: String::new(),
        })
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

//! Hand-written SQL with numbered parameters, bound the same way on both backends.

use std::fmt::Write as _;

use crate::Backend;

/// A bound parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    /// Text or SQL NULL.
    MaybeText(Option<String>),
    Int(i64),
    Real(f64),
}

/// SQL text with numbered parameters (`$1`, accepted by both backends).
#[derive(Debug)]
pub(crate) struct Sql {
    pub backend: Backend,
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(backend: Backend) -> Self {
        Sql {
            backend,
            text: String::new(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    pub fn arg(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        let _ = write!(self.text, "${}", self.args.len());
        self
    }

    pub fn text_arg(&mut self, s: &str) -> &mut Self {
        self.arg(Arg::Text(s.to_owned()))
    }

    /// Text parameters separated by commas (for `IN (…)`).
    pub fn text_list<'a>(&mut self, values: impl IntoIterator<Item = &'a String>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(Arg::Text(v.clone()));
        }
        self
    }

    pub fn fold(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "tessera_fold",
            Backend::Postgres => "lower",
        }
    }
}

/// Binds the arguments of an [`Sql`] to a sqlx query of either backend.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match arg {
                $crate::sql::Arg::Text(s) => q.bind(s.clone()),
                $crate::sql::Arg::MaybeText(s) => q.bind(s.clone()),
                $crate::sql::Arg::Int(i) => q.bind(*i),
                $crate::sql::Arg::Real(f) => q.bind(*f),
            };
        }
        q
    }};
}
pub(crate) use bind_args;

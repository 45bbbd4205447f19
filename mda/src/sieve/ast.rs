//! The compiled form of a script: control flow resolved (`if`/`elsif`/`else` chains),
//! names and tags lowercased, strings unescaped (and `encoded-character` decoded).

#[derive(Debug)]
pub(crate) struct Program {
    /// Extensions named by `require`, lowercase.
    pub requires: Vec<String>,
    pub commands: Vec<Command>,
}

impl Program {
    pub fn has(&self, ext: &str) -> bool {
        self.requires.iter().any(|r| r == ext)
    }
}

#[derive(Debug)]
pub(crate) enum Command {
    /// `if` with its `elsif`s, then the optional `else` block.
    If {
        branches: Vec<(Test, Vec<Command>)>,
        otherwise: Option<Vec<Command>>,
    },
    /// Any other command (`keep`, `fileinto`, `set`, ...).
    Action(Call),
}

/// A command or test: its name and arguments; `tests` for `allof`/`anyof`/`not`.
#[derive(Debug)]
pub(crate) struct Call {
    pub name: String,
    pub args: Vec<Arg>,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug)]
pub(crate) struct Test {
    pub call: Call,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// `:tag`, without the colon, lowercase.
    Tag(String),
    Number(u64),
    /// A single string (may hold `${...}` variable references).
    Str(String),
    /// A bracketed string list.
    List(Vec<String>),
}

impl Arg {
    /// The strings of a string or string list.
    pub fn strings(&self) -> Option<Vec<&str>> {
        match self {
            Arg::Str(s) => Some(vec![s.as_str()]),
            Arg::List(l) => Some(l.iter().map(String::as_str).collect()),
            _ => None,
        }
    }
}

//! The kubectl plugin: `kubectl dataguardian backup now|restore|validate|status|logs`.

fn main() -> std::process::ExitCode {
    dataguardian::cli::plugin::main()
}

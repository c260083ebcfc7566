//! The echo example as a custom server program.
fn main() -> std::process::ExitCode {
    bitbridge_service::serve::<bitbridge_examples::echo::Echo>()
}

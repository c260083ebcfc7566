//! The C++ library wrapper as a custom server program.
fn main() -> std::process::ExitCode {
    bitbridge_service::serve::<bitbridge_examples::cpp::Cpp>()
}

// swift-tools-version:5.9
// The probe for iOS and macOS apps: the generated Swift bindings
// (Sources/SynchealthProbe, from generate.sh) over the Rust library, which
// build-xcframework.sh builds on a Mac into SynchealthProbeFFI.xcframework.
import PackageDescription

let package = Package(
    name: "SynchealthProbe",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [.library(name: "SynchealthProbe", targets: ["SynchealthProbe"])],
    targets: [
        .binaryTarget(name: "SynchealthProbeFFI", path: "SynchealthProbeFFI.xcframework"),
        .target(name: "SynchealthProbe", dependencies: ["SynchealthProbeFFI"], path: "Sources/SynchealthProbe"),
    ]
)

import Foundation
import Mpoxscreen
import XCTest

/// The Swift bindings against the Rust SDK's numbers (`reference.tsv`), on a Mac:
/// `MPOX_BINDINGS_FIXTURES=$PWD/../target/bindings-test swift test` after
/// `scripts/test-bindings.sh` made the fixtures and `build-xcframework.sh` the XCFramework.
/// Not run by CI (no Swift toolchain on Linux hosts of this project).
final class ScreenerTests: XCTestCase {
    private func fixtures() throws -> URL {
        guard let dir = ProcessInfo.processInfo.environment["MPOX_BINDINGS_FIXTURES"] else {
            throw XCTSkip("set MPOX_BINDINGS_FIXTURES to the folder made by scripts/test-bindings.sh")
        }
        return URL(fileURLWithPath: dir)
    }

    func testResultsEqualTheRustSdk() throws {
        let dir = try fixtures()
        let screener = try Screener.fromPath(
            path: dir.appendingPathComponent("model.onnx").path, config: ScreenerConfig(heatmap: true))
        let lines = try String(contentsOf: dir.appendingPathComponent("reference.tsv"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertFalse(lines.isEmpty)
        var worst: Float = 0
        for line in lines {
            let cols = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            let result = try screener.screen(image: Data(contentsOf: URL(fileURLWithPath: cols[0])))
            worst = max(worst, abs(result.probabilityMpox - Float(cols[2])!))
            let logits = cols[4].split(separator: ",").map { Float(String($0))! }
            for (a, b) in zip(result.logits, logits) { worst = max(worst, abs(a - b)) }
        }
        print("SWIFT vs RUST over \(lines.count) photos: max difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-6)
    }

    func testErrorsAreTyped() throws {
        let dir = try fixtures()
        let screener = try Screener.fromPath(path: dir.appendingPathComponent("model.onnx").path)
        XCTAssertThrowsError(try screener.screen(image: Data())) { error in
            XCTAssertEqual(error as? MpoxError, .ImageEmpty)
        }
        XCTAssertThrowsError(try screener.screenRgba(width: 16, height: 16, pixels: Data(count: 1024))) { error in
            XCTAssertEqual(error as? MpoxError, .ImageTooSmall(width: 16, height: 16, minSide: 32))
        }
        XCTAssertThrowsError(try Screener.fromPath(path: "/nonexistent/model.onnx")) { error in
            guard case .Io = error as? MpoxError else { return XCTFail("\(error)") }
        }
    }
}

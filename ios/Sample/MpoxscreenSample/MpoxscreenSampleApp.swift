import SwiftUI

/// Sample app: pick a photo, screen it on the device, show the verdict and the heatmap.
/// Add `model.onnx` (exported by `mpox-trainer export`) to the app target's resources.
@main
struct MpoxscreenSampleApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}

import Mpoxscreen
import PhotosUI
import SwiftUI

/// Loads the bundled model once, screens the picked photo off the main thread and shows the
/// verdict, the probability, quality warnings and the heatmap over the centre crop.
struct ContentView: View {
    @State private var screener: Screener?
    @State private var pick: PhotosPickerItem?
    @State private var photo: UIImage?
    @State private var heatmap: CGImage?
    @State private var verdict = "Loading the model…"
    @State private var details = ""

    var body: some View {
        VStack(spacing: 16) {
            PhotosPicker("Pick a photo", selection: $pick, matching: .images)
                .disabled(screener == nil)
            ZStack {
                if let photo {
                    Image(uiImage: photo).resizable().scaledToFill()
                }
                if let heatmap {
                    Image(decorative: heatmap, scale: 1).resizable().interpolation(.medium)
                }
            }
            .aspectRatio(1, contentMode: .fit)
            .clipped()
            Text(verdict).font(.title2)
            Text(details).font(.footnote)
            Text("A screening aid, not a diagnosis. \"Uncertain\" means: refer for a clinical assessment.")
                .font(.caption)
                .foregroundStyle(.secondary)
            Spacer()
        }
        .padding()
        .task { await load() }
        .onChange(of: pick) { item in
            if let item { Task { await screen(item) } }
        }
    }

    private func load() async {
        guard let url = Bundle.main.url(forResource: "model", withExtension: "onnx") else {
            verdict = "model.onnx is missing from the app bundle"
            return
        }
        do {
            // Loading takes ~100 ms: keep it off the main thread.
            screener = try await Task.detached {
                try Screener.fromPath(path: url.path, config: ScreenerConfig(heatmap: true))
            }.value
            verdict = "Pick a photo of the skin lesion."
        } catch {
            verdict = "Cannot load the model"
            details = "\(error)"
        }
    }

    private func screen(_ item: PhotosPickerItem) async {
        guard let screener, let data = try? await item.loadTransferable(type: Data.self) else { return }
        verdict = "Screening…"
        do {
            let result = try await Task.detached { try screener.screen(image: data) }.value
            photo = UIImage(data: data).map(centreSquare)
            heatmap = result.heatmap.flatMap(overlay)
            verdict = switch result.verdict {
            case .likelyMpox: "Likely mpox: refer for testing"
            case .uncertain: "Uncertain: refer for a clinical assessment"
            case .unlikely: "Unlikely mpox"
            }
            var text = String(format: "Probability of mpox: %.0f%% (model %@, %.0f ms)",
                              result.probabilityMpox * 100, result.modelId, result.latencyMs)
            let warnings = result.quality.map { warning -> String in
                switch warning {
                case .lowResolution: "low resolution"
                case .tooDark: "too dark"
                case .overexposed: "overexposed"
                case .blurry: "blurry"
                case let .other(code): code
                }
            }
            if !warnings.isEmpty { text += "\nPlease retake: " + warnings.joined(separator: ", ") }
            details = text
        } catch let error as MpoxError {
            photo = nil
            heatmap = nil
            switch error {
            case .ImageTooSmall: verdict = "The photo is too small"
            case .ImageFormat, .ImageDecode: verdict = "This file cannot be read as a photo"
            default: verdict = "Screening failed"
            }
            details = "\(error)"
        } catch {
            verdict = "Screening failed"
            details = "\(error)"
        }
    }
}

/// The square centre of the photo: the part the model looked at.
private func centreSquare(_ image: UIImage) -> UIImage {
    // UIImage(data:) keeps the EXIF orientation and draw(at:) honours it, as the SDK does.
    let side = min(image.size.width, image.size.height)
    let format = UIGraphicsImageRendererFormat()
    format.scale = image.scale
    return UIGraphicsImageRenderer(size: CGSize(width: side, height: side), format: format).image { _ in
        image.draw(at: CGPoint(x: (side - image.size.width) / 2, y: (side - image.size.height) / 2))
    }
}

/// The heatmap as translucent red, more opaque where the model saw more evidence of mpox.
private func overlay(_ h: Heatmap) -> CGImage? {
    var pixels = [UInt8](repeating: 0, count: Int(h.width * h.height) * 4)
    for (i, v) in h.values.enumerated() {
        let alpha = UInt8(max(0, min(1, v)) * 160)
        // Premultiplied RGBA: red scaled by alpha.
        pixels[i * 4] = alpha
        pixels[i * 4 + 3] = alpha
    }
    guard let provider = CGDataProvider(data: Data(pixels) as CFData) else { return nil }
    return CGImage(
        width: Int(h.width), height: Int(h.height), bitsPerComponent: 8, bitsPerPixel: 32,
        bytesPerRow: Int(h.width) * 4, space: CGColorSpaceCreateDeviceRGB(),
        bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.premultipliedLast.rawValue),
        provider: provider, decode: nil, shouldInterpolate: true, intent: .defaultIntent)
}

// Sample app: pick a photo, screen it on the device, show the verdict and the heatmap.
// The model is read from src/main/assets/model.onnx (not committed; see ../README.md).
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.mpoxscreen.sample"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.mpoxscreen.sample"
        // ImageDecoder (API 28) applies EXIF orientation like the SDK does; the library itself
        // supports API 24.
        minSdk = 28
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        // Keep the model uncompressed in the APK.
        noCompress += "onnx"
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(project(":mpoxscreen"))
    implementation("androidx.activity:activity-ktx:1.9.3")
}

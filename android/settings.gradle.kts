// mpoxscreen for Android: the library module (`:mpoxscreen`, an AAR) and a sample app (`:sample`).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "mpoxscreen-android"
include(":mpoxscreen", ":sample")

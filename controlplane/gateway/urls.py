from django.urls import path

from controlplane.gateway import views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="gateway-chat"),
    path("completions", views.completions, name="gateway-completions"),
    path("models", views.models, name="gateway-models"),
]

"""Forms: the ask box, the bank's filters, problem and solution editing, student sign-up."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from tutor.models import Problem, Solution

MAX_QUESTION_CHARS = (
    4000  # the same limit as solver.prompts.MAX_QUESTION_CHARS; the ask page says it
)


class AskForm(forms.Form):
    question = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), max_length=MAX_QUESTION_CHARS
    )


class BankFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="search")
    topic = forms.CharField(required=False, max_length=64)
    difficulty = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "any")] + [(i, str(i)) for i in range(1, 6)],
    )
    lang = forms.ChoiceField(required=False, choices=[("", "any")] + list(Problem.Lang.choices))
    status = forms.ChoiceField(
        required=False,
        choices=[("", "any"), ("none", "no servable answer")] + list(Solution.Status.choices),
    )
    page = forms.IntegerField(required=False, min_value=1)

    def filter(self, qs):
        data = self.cleaned_data
        if data.get("q"):
            qs = qs.search(data["q"])
        if data.get("topic"):
            qs = qs.filter(topic=data["topic"])
        if data.get("difficulty"):
            qs = qs.filter(difficulty=data["difficulty"])
        if data.get("lang"):
            qs = qs.filter(lang=data["lang"])
        if data.get("status"):
            qs = qs.with_status(data["status"])
        return qs


class ProblemForm(forms.ModelForm):
    tags = forms.CharField(required=False, help_text="comma-separated")
    solution = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="optional worked solution, ending with the final answer in \\boxed{…}",
    )

    class Meta:
        model = Problem
        fields = ["text", "lang", "topic", "tags", "difficulty", "reference_answer"]
        widgets = {"text": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].max_length = MAX_QUESTION_CHARS
        self.fields["difficulty"].widget = forms.Select(
            choices=[("", "—")] + [(i, str(i)) for i in range(1, 6)]
        )
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags or [])
            del self.fields["solution"]

    def clean_tags(self) -> list[str]:
        return [
            t.strip() for t in self.cleaned_data["tags"].replace("，", ",").split(",") if t.strip()
        ][:20]

    def clean_difficulty(self):
        value = self.cleaned_data["difficulty"]
        if value is not None and not 1 <= value <= 5:
            raise forms.ValidationError("difficulty is 1 to 5")
        return value


class SolutionEditForm(forms.ModelForm):
    class Meta:
        model = Solution
        fields = ["reasoning", "answer", "final"]
        widgets = {
            "reasoning": forms.Textarea(attrs={"rows": 8}),
            "answer": forms.Textarea(attrs={"rows": 6}),
        }


class SignupForm(UserCreationForm):
    pass

"""Forms: the ask box, the bank's filters, problem and solution editing, student sign-up."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from tutor.models import Problem, Solution, Topic, normalize_topic
from tutor.services import text  # the question-text rules: the ask page states the limit


class AskForm(forms.Form):
    # No `maxlength` on the textarea: a browser cuts a longer paste silently, which is what a student
    # must never meet; the page counts characters, and the server refuses with a message.
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))

    def clean_question(self) -> str:
        question = self.cleaned_data["question"]
        too_long = text.length_error(question)
        if too_long:
            raise forms.ValidationError(too_long)
        return question


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
    topic = forms.ChoiceField(required=False, help_text="from the managed list of topics")
    new_topic = forms.CharField(
        required=False,
        max_length=64,
        help_text="or a new topic for the list (stored in lower case; an existing one is reused)",
    )
    tags = forms.CharField(required=False, help_text="comma-separated")
    solution = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="optional worked solution, ending with the final answer in \\boxed{…}",
    )

    class Meta:
        model = Problem
        fields = ["text", "lang", "topic", "new_topic", "tags", "difficulty", "reference_answer"]
        widgets = {"text": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].max_length = text.MAX_QUESTION_CHARS
        self.fields["difficulty"].widget = forms.Select(
            choices=[("", "—")] + [(i, str(i)) for i in range(1, 6)]
        )
        self.fields["topic"].choices = [("", "—")] + [
            (t, t) for t in Topic.objects.values_list("name", flat=True)
        ]
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags or [])
            del self.fields["solution"]

    def clean(self):
        data = super().clean()
        new = normalize_topic(data.get("new_topic") or "")
        if new:
            data["topic"] = new  # services.bank.register_topic adds it to the list when saved
        else:
            data["topic"] = normalize_topic(data.get("topic") or "")
        return data

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
